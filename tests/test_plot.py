"""grokscope plot: every kind renders from small fixture runs; options, filters and user errors."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from grokscope.cli import app
from grokscope.config import ModelConfig, OptimConfig, RunConfig, TaskConfig, hyperparameters
from grokscope.plotting import draw, style
from grokscope.plotting.data import load
from grokscope.plotting.oinfo import _events, _normalised, _smoothed
from grokscope.plotting.sweep import cell_summaries

EVAL_STEPS = np.arange(0, 2001, 20)
MEASURE_STEPS = np.unique(np.round(np.geomspace(1, 2000, 12)).astype(int))
# (weight decay, seed) -> (memorisation step, generalisation step or None)
PLANTED = {
    (0.1, 0): (100, 1500),
    (0.1, 1): (120, None),
    (1.0, 0): (100, 300),
    (1.0, 1): (80, 260),
}


def write_run(root: Path, weight_decay: float, seed: int) -> Path:
    """A run directory in the on-disk format, with a history and collapse, hsic and oinfo tables."""
    name = f"add-p7-wd{weight_decay:g}-seed{seed}"
    config = RunConfig(name=name, seed=seed, task=TaskConfig(p=7), model=ModelConfig(width=16),
                       optim=OptimConfig(weight_decay=weight_decay)).resolved()
    run_dir = root / name
    (run_dir / "measures").mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"schema": "grokscope.run/1", **config.to_dict()}))
    memorised, generalised = PLANTED[(weight_decay, seed)]
    steps = EVAL_STEPS
    train_acc = np.where(steps >= memorised, 1.0, 0.5 * steps / memorised)
    test_acc = np.where(steps >= (generalised or 10**9), 1.0, 0.05)
    pd.DataFrame({
        "step": steps, "train_loss": 2.0 - train_acc, "train_acc": train_acc,
        "test_loss": 3.0 - test_acc, "test_acc": test_acc, "weight_norm": 10.0 + steps / 500,
    }).to_parquet(run_dir / "history.parquet", index=False)

    columns = {"run": name, **hyperparameters(config)}
    rng = np.random.default_rng(seed)
    rows = []
    for step in MEASURE_STEPS:
        for split in ("train", "test"):
            rows.append({"step": step, "metric": "rnc1", "split": split, "layer": "layers.0",
                         "value": 1.0 / (1 + step / 100) + (0.2 if split == "test" else 0.0)})
            rows.append({"step": step, "metric": "nc1", "split": split, "layer": "layers.0",
                         "value": 5.0 / (1 + step / 50)})
    table(rows, columns).to_parquet(run_dir / "measures" / "collapse.parquet", index=False)

    rows = []
    for step in MEASURE_STEPS:
        for depth, layer in enumerate(("layers.0", "layers.1")):
            rows.append({"step": step, "metric": "nhsic_x", "split": "test", "layer": layer,
                         "value": 0.9 - 0.3 * np.log10(step) / 3 - 0.1 * depth})
            rows.append({"step": step, "metric": "nhsic_y", "split": "test", "layer": layer,
                         "value": 0.2 + 0.6 * np.log10(step) / 3 + 0.05 * depth})
    table(rows, columns).to_parquet(run_dir / "measures" / "hsic.parquet", index=False)

    rows = []
    for step in MEASURE_STEPS:
        per_size = {size: (-0.5 * size * np.log10(step) / 3 + rng.normal(0, 0.01),
                           0.3 * size - 0.1 * np.log10(step)) for size in (2, 3, 4)}
        for size, (low, high) in per_size.items():
            for metric, value in (("synergy", low), ("redundancy", high)):
                rows.append({"step": step, "metric": metric, "split": "train", "layer": "layers.0",
                             "value": value, "size": size, "bins": ",".join(map(str, range(size))),
                             "n_neurons": 4 * size, "search": "exhaustive", "scope": "size"})
        for metric, pick in (("synergy", min), ("redundancy", max)):
            size = pick(per_size, key=lambda s: per_size[s][0 if metric == "synergy" else 1])
            value = per_size[size][0 if metric == "synergy" else 1]
            rows.append({"step": step, "metric": metric, "split": "train", "layer": "layers.0",
                         "value": value, "size": size, "bins": ",".join(map(str, range(size))),
                         "n_neurons": 4 * size, "search": "exhaustive", "scope": "overall"})
    table(rows, columns).to_parquet(run_dir / "measures" / "oinfo.parquet", index=False)

    # Fourier: frequency 2 of the embedding grows while the others decay; restricted loss falls
    # early, excluded loss rises.
    rows = []
    for step in MEASURE_STEPS:
        growth = np.log10(step) / 3
        for k in (1, 2, 3):
            rows.append({"step": step, "metric": "fourier_norm", "layer": "layers.0.weight", "frequency": k,
                         "value": 1 + 4 * growth if k == 2 else 1 - 0.5 * growth})
        rows.append({"step": step, "metric": "key_frequency", "frequency": 2, "value": 2.0})
        for split in ("train", "test"):
            rows.append({"step": step, "metric": "restricted_loss", "split": split, "value": 2.0 - 1.5 * growth})
            rows.append({"step": step, "metric": "excluded_loss", "split": split, "value": 0.5 + growth})
    table(rows, columns).to_parquet(run_dir / "measures" / "fourier.parquet", index=False)
    return run_dir


def table(rows: list[dict], columns: dict) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["run"] = columns["run"]
    frame["step"] = frame["step"].astype("int64")
    frame["value"] = frame["value"].astype("float64")
    for key, value in columns.items():
        frame[key] = value
    return frame


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    for weight_decay, seed in PLANTED:
        write_run(root, weight_decay, seed)
    return root


def invoke(*args: str, stdin: str | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], input=stdin)


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def distinct_colours(path: Path) -> int:
    import matplotlib.image

    pixels = matplotlib.image.imread(str(path))
    return len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0))


def svg_size_pt(path: Path) -> tuple[float, float]:
    import re

    head = path.read_text()[:2000]
    width = re.search(r'width="([\d.]+)pt"', head).group(1)
    height = re.search(r'height="([\d.]+)pt"', head).group(1)
    return float(width), float(height)


# kind, its words before the inputs, its options
KINDS = [
    ("curves", [], []),
    ("phases", [], []),
    ("pareto", [], []),
    ("info-plane", [], []),
    ("collapse", [], []),
    ("sweep", [], ["--x", "weight_decay", "--y", "seed"]),
    ("metric", ["nc1"], []),
    ("fourier", [], []),
]


@pytest.mark.parametrize(("kind", "words", "options"), KINDS, ids=[k[0] for k in KINDS])
def test_every_kind_renders_png_and_svg(runs, tmp_path, kind, words, options):
    png = tmp_path / "figure.png"
    result = invoke("plot", kind, *words, runs, "-o", png, "--width", 5, "--height", 3, "--dpi", 80, *options)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(png)
    assert png_size(png) == (400, 240)
    assert distinct_colours(png) > 20  # lines, text, legend: far from a blank canvas

    svg = tmp_path / "figure.svg"
    result = invoke("plot", kind, *words, runs, "-o", svg, "--width", 5, "--height", 3, *options)
    assert result.exit_code == 0, result.output
    assert svg_size_pt(svg) == (360.0, 216.0)
    assert svg.read_text().count("<path") > 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.png", "figure.svg"]  # no temp files left


def test_pdf_by_extension(runs, tmp_path):
    pdf = tmp_path / "curves.pdf"
    result = invoke("plot", "curves", runs, "-o", pdf)
    assert result.exit_code == 0, result.output
    assert pdf.read_bytes()[:5] == b"%PDF-"


def test_colour_and_facet_by_hyperparameter(runs):
    tables = load([str(runs)])
    plot = draw("curves", tables, style.FigureOptions(color="weight_decay", facet="seed"))
    assert plot.mapping["color"] == "weight_decay"
    assert list(plot.facet.rows) == ["quantity"] and list(plot.facet.cols) == ["seed"]
    # Two weight decays: coloured as two ordered categories, not a continuous scale.
    assert list(plot.data["weight_decay"].cat.categories) == [0.1, 1.0]

    plain = draw("curves", tables, style.FigureOptions())
    assert plain.mapping["color"] == "run" and plain.data["run"].nunique() == 4


def test_where_draws_fewer_runs(runs):
    tables = load([str(runs)])
    kept = tables.where("weight_decay == 1")
    assert set(draw("curves", kept, style.FigureOptions()).data["run"]) == {"add-p7-wd1-seed0", "add-p7-wd1-seed1"}
    # A query on a measure column filters the measure tables and leaves the history whole.
    test_only = tables.where("split == 'test'")
    assert set(test_only.metric("rnc1")["split"]) == {"test"} and len(test_only.history) == len(tables.history)

    both = tables.where("seed == 1 and weight_decay > 0.5")
    assert set(draw("collapse", both, style.FigureOptions()).data["run"]) == {"add-p7-wd1-seed1"}


def test_nothing_left_after_where_is_a_one_line_error(runs, tmp_path):
    result = invoke("plot", "curves", runs, "--where", "weight_decay > 100", "-o", tmp_path / "c.png")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.strip().count("\n") == 0 and "nothing to plot" in result.stderr
    assert not (tmp_path / "c.png").exists()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["curves", "{runs}", "--color", "nosuch"], "'nosuch'"),
        (["curves", "{runs}", "--facet", "nosuch"], "'nosuch'"),
        (["curves", "{runs}", "--where", "nosuch > 1"], "'nosuch'"),
        (["sweep", "{runs}", "--x", "nosuch"], "'nosuch'"),
        (["metric", "nosuch", "{runs}"], "'nosuch'"),
        (["curves", "{table}"], "history"),
        (["pareto", "{empty}"], "synergy"),
        (["info-plane", "{collapse}"], "nhsic_x"),
        (["curves", "{runs}", "-o", "{tmp}/figure.gif"], ".png"),
    ],
)
def test_user_errors_name_what_is_wrong(runs, tmp_path, args, named):
    collapse = runs / "add-p7-wd1-seed0" / "measures" / "collapse.parquet"
    empty = tmp_path / "empty.parquet"
    pd.read_parquet(collapse).iloc[0:0].to_parquet(empty, index=False)
    alone = tmp_path / "collapse.parquet"  # a table outside its run: no history comes with it
    alone.write_bytes(collapse.read_bytes())
    paths = {"runs": runs, "table": alone, "empty": empty, "collapse": alone, "tmp": tmp_path}
    args = [a.format(**paths) for a in args]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "figure.png")]
    result = invoke("plot", *args)
    assert result.exit_code == 2, result.output
    assert named in result.stderr and result.stderr.strip().count("\n") == 0
    assert "Traceback" not in result.output
    assert not (tmp_path / "figure.png").exists()


def test_paths_from_stdin(runs, tmp_path):
    run_dirs = "\n".join(str(p) for p in sorted(runs.iterdir())[:2]) + "\n"
    tables = load([str(p) for p in sorted(runs.iterdir())[:2]])
    assert tables.history["run"].nunique() == 2
    result = invoke("plot", "metric", "weight_norm", "-", "-o", tmp_path / "w.png", stdin=run_dirs)
    assert result.exit_code == 0, result.output
    assert png_size(tmp_path / "w.png") == (1050, 675)  # 7 x 4.5 in at 150 dpi: the defaults


def test_measure_tables_as_inputs(runs, tmp_path):
    # A run's own table (what measure prints) names its series: history and identity come along.
    oinfo = sorted(runs.glob("*/measures/oinfo.parquet"))
    tables = load([str(p) for p in oinfo])
    assert tables.measures["run"].nunique() == 4 and tables.measures["series"].nunique() == 4
    assert set(tables.history["series"]) == set(tables.measures["series"])
    assert draw("pareto", tables, style.FigureOptions()).data["run"].nunique() == 4
    # A table on its own is just its rows.
    alone = tmp_path / "oinfo.parquet"
    alone.write_bytes(oinfo[0].read_bytes())
    tables = load([str(alone)])
    assert tables.history.empty and tables.measures["run"].nunique() == 1


def test_phases_normalise_then_smooth_per_run():
    frame = pd.DataFrame({"run": ["a"] * 4 + ["b"] * 3, "step": [1, 2, 3, 4, 1, 2, 3],
                          "value": [2.0, 4.0, 3.0, 6.0, -1.0, -1.0, -1.0]})
    normalised = _normalised(frame)
    assert normalised["value"].tolist() == [0.0, 0.5, 0.25, 1.0, 0.0, 0.0, 0.0]
    smoothed = _smoothed(normalised, 0.1)
    expected, state = [], None
    for value in [0.0, 0.5, 0.25, 1.0]:
        state = value if state is None else 0.9 * state + 0.1 * value
        expected.append(state)
    assert np.allclose(smoothed[smoothed["run"] == "a"]["value"], expected)


def test_phases_figure_marks_the_grokking_steps(runs):
    tables = load([str(runs / "add-p7-wd0.1-seed0")])
    plot = draw("phases", tables, style.FigureOptions())
    assert sum(type(layer.geom).__name__ == "geom_vline" for layer in plot.layers) == 1
    events = _events(tables, style.FigureOptions(), set(tables.measures["series"]), "run")
    assert events.set_index("event")["step"].to_dict() == {"memorisation": 100.0, "generalisation": 1500.0}
    progress = plot.data[plot.data["panel"] == "progress (normalised)"]
    assert progress["value"].between(0, 1).all()
    assert set(plot.data[plot.data["panel"] == "multiplet size"]["value"]) <= {2.0, 3.0, 4.0}


def test_sweep_cells_take_the_most_common_phase_and_mean_gap():
    summaries = pd.DataFrame({
        "weight_decay": [0.1, 0.1, 0.1, 1.0, 1.0],
        "alpha": [1.0] * 5,
        "phase": ["grokking", "grokking", "memorization", "comprehension", "grokking"],
        "grokking_gap": pd.array([1400, 1600, None, 200, 1200], dtype="Int64"),
    })
    cells = cell_summaries(summaries, ["weight_decay", "alpha"]).set_index("weight_decay")
    assert cells.loc[0.1, "phase"] == "grokking" and cells.loc[0.1, "gap"] == 1500.0
    assert cells.loc[0.1, "runs"] == 3 and cells.loc[0.1, "label"] == "1500\nn=3"
    # A tie (one comprehension, one grokking) goes to the first phase in the legend's order.
    assert cells.loc[1.0, "phase"] == "comprehension" and cells.loc[1.0, "gap"] == 700.0


def test_one_line_per_run_and_split(runs):
    # A history has no layer column: its lines must still get ids (not NaN) that keep runs apart.
    data = draw("collapse", load([str(runs)]), style.FigureOptions()).data
    assert data["line"].notna().all()
    assert data.groupby("quantity", observed=True)["line"].nunique().to_dict() == {"RNC1 (log10)": 8, "test accuracy": 4}
    assert (data.groupby(["line", "step"]).size() == 1).all()


def test_fourier_spectrum_tiles_cover_the_steps_without_gaps(runs):
    tables = load([str(runs / "add-p7-wd0.1-seed0")])
    with style.quiet_plotting():
        figure = draw("fourier", tables, style.FigureOptions())
    spectrum, losses = (plot.data for plot in figure)
    assert len(spectrum) == 3 * len(MEASURE_STEPS)  # every (step, frequency) once
    for _, frequency in spectrum.groupby("frequency"):
        frequency = frequency.sort_values("step")
        # Each tile ends where the next begins, and each step lies inside its own tile.
        assert np.allclose(frequency["xmax"].to_numpy()[:-1], frequency["xmin"].to_numpy()[1:])
        assert ((frequency["xmin"] < frequency["step"]) & (frequency["step"] < frequency["xmax"])).all()
    assert set(losses["quantity"]) == {"loss", "restricted loss", "excluded loss"}
    assert set(losses.loc[losses["quantity"] == "loss", "split"]) == {"train", "test"}
