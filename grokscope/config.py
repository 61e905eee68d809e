"""The full, typed configuration of one training run.

Every default carries the reason it was chosen; together they are the seed experiment of the
grokking papers (modular addition, p = 97, 40% of pairs for training, a 250-unit ReLU MLP trained
full-batch with AdamW). The resolved config is written to ``run.json`` and is enough to rebuild
the model and the exact train/test split.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from grokscope.errors import GrokscopeError


def seconds_from_env(name: str, default: float) -> float:
    """A number of seconds >= 0 from the environment variable ``name`` (unset or empty: ``default``);
    anything else is a one-line error naming the variable."""
    import os

    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise GrokscopeError(f"{name}: {raw!r} is not a number of seconds")
    return seconds

MODULAR_OPS = ("add", "sub", "mul", "div", "sq_sum", "poly")
TASKS = MODULAR_OPS + ("digits", "npz")
OPTIMIZERS = ("adamw", "sgd")
LOSSES = ("ce", "mse")
REDUCTIONS = ("mean", "sum")
LOSS_DTYPES = ("float32", "float64")
MODEL_KINDS = ("mlp", "transformer")
ACTIVATIONS = ("relu", "gelu")


@dataclass
class TaskConfig:
    # add: (a+b) mod p, the task of Power et al. 2022 and of every seed paper.
    name: str = "add"
    # 97 is the prime of the seed papers: p^2 = 9409 pairs, small enough for 2 CPU cores.
    p: int = 97
    # 40% of all pairs for training: the fraction at which weight decay 0.1 groks slowly.
    train_fraction: float = 0.4
    # digits / npz: an absolute number of training samples instead of a fraction.
    train_size: int | None = None
    # None resolves to the run's seed, so a seed sweep also varies the split.
    split_seed: int | None = None
    # npz: the user's file with arrays X and y (and optionally split: 0 train, 1 test).
    path: str | None = None

    def validate(self) -> None:
        if self.name not in TASKS:
            raise GrokscopeError(f"--task: unknown task {self.name!r}; known: {', '.join(TASKS)}")
        if self.name in MODULAR_OPS and self.p < 2:
            raise GrokscopeError(f"--p: must be at least 2, got {self.p}")
        if not 0.0 < self.train_fraction < 1.0:
            raise GrokscopeError(
                f"--train-fraction: must lie strictly between 0 and 1, got {self.train_fraction}"
            )
        if self.train_size is not None and self.train_size < 1:
            raise GrokscopeError(f"--train-size: must be positive, got {self.train_size}")
        if self.name == "npz" and not self.path:
            raise GrokscopeError("--data: the npz task needs a file (--data FILE.npz)")


@dataclass
class ModelConfig:
    # mlp: the seed experiments' MLP on concatenated one-hots (2p -> width -> p). transformer: the
    # grokking transformer of Nanda et al. 2023 on the tokens [a, b, =], answer read at "=".
    # Run.json files written before transformers existed have no kind: they are MLPs.
    kind: str = "mlp"
    # mlp: hidden layers; transformer: blocks. One, as in the seed MLP and in Nanda et al.
    depth: int = 1
    # mlp only: 250 hidden units, as in Liu et al. (Omnigrok) and Clauw et al.
    width: int = 250
    # Liu et al.'s grokking-by-large-initialisation multiplies every weight by alpha; 1 = the
    # model's own initialisation (PyTorch's default for the MLP, Nanda et al.'s for the transformer).
    alpha: float = 1.0
    # A zero last layer makes the initial output 0 whatever alpha is (Liu et al.'s alpha setup).
    zero_last: bool = False
    # The seed MLP has no output bias: the logits are a pure readout of the penultimate layer,
    # which is what neural-collapse measures (NC3, NC4) assume. Nanda et al.'s unembedding has
    # none either.
    output_bias: bool = False
    # relu: the seed MLP and Nanda et al.; gelu: Power et al.'s and DeMoss et al.'s transformers.
    activation: str = "relu"
    # transformer only. Residual width 128, 4 heads of 32 and 512 MLP neurons (4 x d_model):
    # Nanda et al.'s model, and Power et al.'s width and heads.
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    # transformer only. Nanda et al. train without LayerNorm, which keeps the residual stream
    # linear in the embeddings; Power et al.'s decoder has pre-LayerNorm blocks and a final one.
    layer_norm: bool = False

    def validate(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise GrokscopeError(f"--model: unknown {self.kind!r}; known: {', '.join(MODEL_KINDS)}")
        if self.activation not in ACTIVATIONS:
            raise GrokscopeError(f"--activation: unknown {self.activation!r}; known: {', '.join(ACTIVATIONS)}")
        if self.depth < 1:
            what = "block" if self.kind == "transformer" else "hidden layer"
            raise GrokscopeError(f"--depth: need at least one {what}, got {self.depth}")
        if self.width < 1:
            raise GrokscopeError(f"--width: must be positive, got {self.width}")
        if not self.alpha > 0:
            raise GrokscopeError(f"--alpha: must be positive, got {self.alpha}")
        for option, value in (("--d-model", self.d_model), ("--heads", self.n_heads), ("--d-mlp", self.d_mlp)):
            if value < 1:
                raise GrokscopeError(f"{option}: must be positive, got {value}")
        if self.d_model % self.n_heads:
            raise GrokscopeError(f"--heads: {self.n_heads} heads do not divide --d-model {self.d_model}")


@dataclass
class OptimConfig:
    name: str = "adamw"
    # lr 0.03 / betas (0.9, 0.98): the seed papers' AdamW settings for full-batch modular addition.
    lr: float = 0.03
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-8
    # 0.1 gives delayed generalisation (grokking); 2.0 generalises quickly.
    weight_decay: float = 0.1
    momentum: float = 0.0
    loss: str = "ce"
    # float64: compute the loss from float64 logits. A memorised training set drives the loss to
    # ~1e-7, below float32's resolution near 1, which quantises the gradient; Nanda et al.'s
    # transformer code takes the loss in float64 for this reason. float32 keeps the seed MLP as it was.
    loss_dtype: str = "float32"
    # mse only: mean over all logits (PyTorch's default) or sum over classes, mean over samples.
    reduction: str = "mean"
    # None = full batch, as in the seed papers: no minibatch noise, so grokking is deterministic.
    batch_size: int | None = None
    # Linear learning-rate warmup over the first N updates (update u uses lr * min(u / N, 1)).
    # 0: none, as in the seed papers; Power et al. and Nanda et al. warm up over 10.
    warmup: int = 0
    # Hold the global weight norm at its initial value after every step (Liu et al.'s alpha runs).
    fix_norm: bool = False
    # DeMoss et al.'s regularisers, off by default as in the seed experiments. weight_noise: the
    # standard deviation of Gaussian noise added to every parameter in the training forward pass
    # (their regularised runs use 1e-2 or 1e-3); spectral_entropy: the weight of the mean
    # spectral entropy of the weight matrices added to the loss (theirs: 0.1).
    weight_noise: float = 0.0
    spectral_entropy: float = 0.0

    def validate(self) -> None:
        if self.name not in OPTIMIZERS:
            raise GrokscopeError(f"--optimizer: unknown {self.name!r}; known: {', '.join(OPTIMIZERS)}")
        if self.loss not in LOSSES:
            raise GrokscopeError(f"--loss: unknown {self.loss!r}; known: {', '.join(LOSSES)}")
        if self.loss_dtype not in LOSS_DTYPES:
            raise GrokscopeError(
                f"--loss-dtype: unknown {self.loss_dtype!r}; known: {', '.join(LOSS_DTYPES)}"
            )
        if self.reduction not in REDUCTIONS:
            raise GrokscopeError(
                f"--reduction: unknown {self.reduction!r}; known: {', '.join(REDUCTIONS)}"
            )
        if not self.lr > 0:
            raise GrokscopeError(f"--lr: must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise GrokscopeError(f"--weight-decay: must be non-negative, got {self.weight_decay}")
        if self.batch_size is not None and self.batch_size < 1:
            raise GrokscopeError(f"--batch-size: must be positive, got {self.batch_size}")
        if self.warmup < 0:
            raise GrokscopeError(f"--warmup: must be non-negative, got {self.warmup}")
        if not 0 <= self.weight_noise < float("inf"):
            raise GrokscopeError(f"--weight-noise: must be a finite number >= 0, got {self.weight_noise}")
        if not 0 <= self.spectral_entropy < float("inf"):
            raise GrokscopeError(f"--spectral-entropy: must be a finite number >= 0, got {self.spectral_entropy}")


@dataclass
class ScheduleConfig:
    # 4000 full-batch steps: enough for weight decay 0.1 to grok on p = 97.
    steps: int = 4000
    # Every 40 steps plus 140 log-spaced steps: ~200 checkpoints, dense where early dynamics are
    # fast (log) and even where grokking happens late (linear).
    save_every: int = 40
    save_log: int = 140
    # Evaluate train/test loss and accuracy every 10 steps (and at every checkpoint).
    eval_every: int = 10

    def validate(self) -> None:
        if self.steps < 1:
            raise GrokscopeError(f"--steps: must be positive, got {self.steps}")
        if self.save_every < 0 or self.save_log < 0 or self.eval_every < 0:
            raise GrokscopeError("--save-every, --save-log and --eval-every must be non-negative")

    def checkpoint_steps(self) -> list[int]:
        """Steps that get a checkpoint: 0, the last step, every ``save_every``, ``save_log`` log-spaced."""
        import numpy as np

        steps = {0, self.steps}
        if self.save_every:
            steps.update(range(0, self.steps + 1, self.save_every))
        if self.save_log:
            steps.update(int(s) for s in np.unique(np.round(np.geomspace(1, self.steps, self.save_log))))
        return sorted(steps)

    def eval_steps(self) -> list[int]:
        steps = set(self.checkpoint_steps())
        if self.eval_every:
            steps.update(range(0, self.steps + 1, self.eval_every))
        return sorted(steps)


# What ``train --model transformer`` uses for options left unset: Nanda et al.'s (2023) setup,
# with a schedule that fits 2 CPU cores. The MLP's are the dataclass defaults above.
TRANSFORMER_DEFAULTS = {
    # AdamW lr 1e-3, weight decay 1 and a 10-update linear warmup: Nanda et al. and Power et al.
    # (the MLP's lr 0.03 makes a transformer diverge).
    "lr": 1e-3,
    "weight_decay": 1.0,
    "warmup": 10,
    # Nanda et al. (and TransformerLens's grokking demo) take the loss in float64.
    "loss_dtype": "float64",
    # STEPS_PLACEHOLDER
    "steps": 20000,
    "save_every": 100,
    "save_log": 100,
    "eval_every": 50,
}


def model_defaults(kind: str) -> dict:
    """Values of optim/schedule fields that differ from the dataclass defaults for ``kind``."""
    return dict(TRANSFORMER_DEFAULTS) if kind == "transformer" else {}


@dataclass
class SubnetConfig:
    """A sub-network (``grokscope subnet``): the parent run retrained from the same initialisation
    and split with only ``neurons`` of hidden layer ``layer`` trained; every other neuron of that
    layer is held at exactly zero (its incoming weights and bias zeroed before the first step and
    after every step, as Clauw et al. mask the first layer's weight rows).

    No defaults: every field is a record of how the neurons were chosen, written by ``subnet``.
    """

    # The parent run's folder (absolute) and name.
    parent: str
    parent_run: str
    # The --at rule as typed ("emergence", "min", "step:229", "acc:0.99").
    rule: str
    # The parent's checkpoint whose most synergistic multiplet was taken, and that multiplet's
    # Ward bins ("0,3,7") and O-information (the table's units).
    step: int
    bins: str
    synergy: float
    # The hidden layer (feature key) the neurons belong to.
    layer: str
    # True: ``neurons`` are the complement of the multiplet's (--inverse).
    inverse: bool
    # The neurons that train, ascending.
    neurons: list[int]
    control: dict | None = None  # a --control random draw: {"kind", "draw", "base_seed"} (subnet_controls)

    def validate(self) -> None:
        neurons = list(self.neurons)
        if any(not isinstance(n, int) or isinstance(n, bool) or n < 0 for n in neurons) \
                or neurons != sorted(set(neurons)):
            raise GrokscopeError(f"subnet: neurons must be distinct non-negative integers in ascending order, "
                                 f"got {neurons[:8]}{'...' if len(neurons) > 8 else ''}")
        if not self.layer:
            raise GrokscopeError("subnet: names no layer")


@dataclass
class RunConfig:
    name: str = "run"
    seed: int = 0
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    # None for an ordinary run; run.json then has no "subnet" entry (files written before
    # sub-networks existed read the same way).
    subnet: SubnetConfig | None = None

    def validate(self) -> None:
        self.task.validate()
        self.model.validate()
        self.optim.validate()
        self.schedule.validate()
        if self.model.kind == "transformer" and self.task.name not in MODULAR_OPS:
            raise GrokscopeError(
                f"--model transformer: reads the tokens a, b of a modular task; --task {self.task.name} has none"
            )
        if self.subnet is not None:
            self.subnet.validate()

    def resolved(self) -> "RunConfig":
        """A copy with every 'None means derive it' field filled in, as stored in run.json."""
        task = dataclasses.replace(
            self.task, split_seed=self.seed if self.task.split_seed is None else self.task.split_seed
        )
        return dataclasses.replace(self, task=task)

    def to_dict(self) -> dict:
        document = dataclasses.asdict(self)
        if document["subnet"] is None:
            del document["subnet"]
        return document

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        def build(kind, values):
            known = {f.name for f in dataclasses.fields(kind)}
            unknown = set(values) - known
            if unknown:
                raise GrokscopeError(f"run.json: unknown {kind.__name__} field(s) {sorted(unknown)}")
            return kind(**values)

        return cls(
            name=data["name"],
            seed=data["seed"],
            task=build(TaskConfig, data["task"]),
            model=build(ModelConfig, data["model"]),
            optim=build(OptimConfig, data["optim"]),
            schedule=build(ScheduleConfig, data["schedule"]),
            subnet=build(SubnetConfig, data["subnet"]) if data.get("subnet") is not None else None,
        )


# The columns people read first, in this order; every other setting follows (hyperparameters()).
_LEADING_COLUMNS = (
    "task", "p", "train_fraction", "seed", "model", "width", "depth", "alpha", "optimizer", "lr",
    "weight_decay", "loss",
)


def hyperparameters(config: RunConfig) -> dict:
    """Every setting of the run that shapes its training, as flat columns, so measure tables and
    reports can be faceted without joins and two runs that differ in any setting stay distinct.

    Each field of the task, model and optimizer configs is a column under its own name (the task's
    and optimizer's ``name`` as ``task`` and ``optimizer``, the npz file as ``data``), plus
    ``seed`` and ``steps``; a field added to those configs becomes a column by itself. A value
    that does not apply is None: ``p`` outside the modular tasks, ``train_fraction`` when
    ``--train-size`` replaced it.

    A sub-network (``grokscope subnet``) adds what sets it apart from its parent: ``parent_run``,
    ``subnet_rule``, ``subnet_step``, ``subnet_inverse``, ``subnet_neurons`` (hidden neurons trained)
    and ``subnet_control`` (a random control's kind); all None for an ordinary run.
    """
    task, model, optim = config.task, config.model, config.optim
    columns = {
        "task": task.name,
        "p": task.p if task.name in MODULAR_OPS else None,
        "train_fraction": task.train_fraction if task.train_size is None else None,
        "train_size": task.train_size,
        "split_seed": task.split_seed,
        "data": task.path,
        "seed": config.seed,
        "model": model.kind,
        # The transformer's width is its residual stream's, as in Power et al.'s "width 128".
        "width": model.d_model if model.kind == "transformer" else model.width,
        "optimizer": optim.name,
        "steps": config.schedule.steps,
    }
    for part in (model, optim):
        for item in dataclasses.fields(part):
            if item.name not in ("name", "kind"):  # the model's kind is the "model" column
                columns.setdefault(item.name, getattr(part, item.name))
    subnet = config.subnet
    columns.update({
        "parent_run": subnet.parent_run if subnet else None,
        "subnet_rule": subnet.rule if subnet else None,
        "subnet_step": subnet.step if subnet else None,
        "subnet_inverse": subnet.inverse if subnet else None,
        "subnet_neurons": len(subnet.neurons) if subnet else None,
        "subnet_control": subnet.control["kind"] if subnet and subnet.control else None,
    })
    leading = {name: columns.pop(name) for name in _LEADING_COLUMNS}
    return {**leading, **columns}


# Settings that one kind of model, optimizer or loss reads and the others ignore: the column
# that names the kind, and the kinds that read the setting. A report's table leaves such a column
# out where no row is of one of those kinds (an MLP run's table has no d_model).
APPLIES_ONLY_TO = {
    **{name: ("model", ("transformer",)) for name in ("d_model", "n_heads", "d_mlp", "layer_norm")},
    **{name: ("optimizer", ("adamw",)) for name in ("beta1", "beta2", "eps")},
    "momentum": ("optimizer", ("sgd",)),
    "reduction": ("loss", ("mse",)),
}


def hyperparameter_columns() -> tuple[str, ...]:
    """The names of :func:`hyperparameters`' columns, in their order."""
    return tuple(hyperparameters(RunConfig().resolved()))
