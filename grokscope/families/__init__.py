"""The measure families: which exist, which metrics each gives, and what each is measured from.

A family turns what a series holds into tidy rows (``metric``, ``value``, ``split``, ``layer``
and the columns it needs), one module each; the numerics live in :mod:`grokscope.measures`.

- feature families (:data:`FEATURE_FAMILIES`: collapse, hsic, oinfo) read a checkpoint's
  features, stored or computed in memory (:mod:`grokscope.families.feature_steps`);
- checkpoint families (weights, spectra, complexity, fourier, llc;
  :mod:`grokscope.families.checkpoints`) read the weights, and complexity, fourier and llc also
  run the model on the data;
- series families (:data:`SERIES_FAMILIES`: grokking) read the history once per series.

``measure`` (:mod:`grokscope.pipeline.measure`) plans, runs and saves them.
"""

from __future__ import annotations

from typing import Iterable

from grokscope.errors import GrokscopeError, did_you_mean

FAMILY_METRICS = {
    "collapse": ("within_var", "between_var", "nc1", "rnc1", "rnc1_sup", "nc1_papyan", "nc2_equinorm",
                 "nc2_equiangularity", "nc2_cond", "nc3", "nc4"),
    "hsic": ("nhsic_x", "nhsic_y", "hsic_x", "hsic_y", "cka_x", "cka_y"),
    "weights": ("weight_norm", "param_norm", "balancedness", "spectral_entropy", "effective_rank", "stable_rank"),
    "grokking": ("memorization_step", "generalization_step", "grokking_gap"),
    "oinfo": ("synergy", "redundancy"),
    # spectral_entropy / effective_rank are the weights family's too (same values, same SVDs as
    # the coarse-graining); a bare --metric spectral_entropy still means the cheap weights family.
    "complexity": ("complexity", "complexity_raw", "complexity_tau", "complexity_bin_size", "complexity_loss",
                   "complexity_reference_loss", "complexity_error", "complexity_bound", "complexity_rank",
                   "complexity_loss_evaluations", "complexity_exhausted", "complexity_loss_samples",
                   "complexity_loss_seed", "spectral_entropy", "effective_rank"),
    "fourier": ("fourier_norm", "fourier_gini", "key_frequency", "restricted_loss", "excluded_loss"),
    "llc": ("llc", "llc_sd", "llc_chain", "llc_mean_loss", "llc_max_loss", "llc_final_loss", "llc_diverged",
            "llc_reference_loss", "llc_nbeta", "llc_parameters", "llc_step_size"),
    "spectra": ("alpha", "alpha_weighted", "alpha_xmin", "alpha_xmax", "alpha_ks_distance", "alpha_tail_size",
                "lambda_max"),
}
# Families that ``--metric all`` leaves out, measured only when named: llc samples thousands of
# SGLD steps per checkpoint (seconds each, minutes for a series) and its step size depends on
# the model; spectra (milliseconds) stays out so that ``all`` keeps giving the tables it always
# gave (scripts and the report read that set), and is one word away: ``--metric all,spectra``.
ONLY_WHEN_NAMED = ("llc", "spectra")
FAMILY_ALIASES = {"o-info": "oinfo", "o_info": "oinfo", "nc": "collapse", "nhsic": "hsic"}
FEATURE_FAMILIES = ("collapse", "hsic", "oinfo")
# Families with one set of rows per series (from its history), replaced whole when measured again.
SERIES_FAMILIES = ("grokking",)
# Names of the families in messages (the --metric spelling).
FAMILY_LABELS = {"oinfo": "o-info"}


def resolve_metrics(names: Iterable[str]) -> dict[str, set[str] | None]:
    """Family -> wanted metric names (None = all of them), from ``--metric`` values."""
    wanted: dict[str, set[str] | None] = {}
    for raw in names:
        for name in (n.strip() for n in raw.split(",") if n.strip()):
            family = FAMILY_ALIASES.get(name, name)
            if family == "all":
                wanted.update(dict.fromkeys(f for f in FAMILY_METRICS if f not in ONLY_WHEN_NAMED))
            elif family in FAMILY_METRICS:
                wanted[family] = None
            else:
                owner = next((f for f, metrics in FAMILY_METRICS.items() if name in metrics), None)
                if owner is None:
                    raise GrokscopeError(_unknown_metric(name))
                if wanted.get(owner, set()) is not None:
                    wanted.setdefault(owner, set()).add(name)
    if not wanted:
        raise GrokscopeError("--metric: name at least one family or metric")
    return wanted


def _unknown_metric(name: str) -> str:
    """One line for an unknown ``--metric`` name: the close names first, then the families."""
    families = [*FAMILY_METRICS, "o-info", "all"]
    metrics = [m for ms in FAMILY_METRICS.values() for m in ms]
    return (f"--metric: unknown {name!r}{did_you_mean(name, [*families, *metrics])}; families: {', '.join(families)} "
            "(each family's metrics: grokscope measure --help)")


# Families that ``--metric all`` brings only to the series they apply to: fourier needs a
# grokscope run on modular arithmetic (its task and p). Named on their own, they give NaN rows
# with the reason instead, so that asking for them is never silently ignored.
WHERE_THEY_APPLY = ("fourier",)


def only_through_all(names: Iterable[str]) -> set[str]:
    """The families of :data:`WHERE_THEY_APPLY` that ``--metric`` values ask for only through "all"."""
    named = {FAMILY_ALIASES.get(n.strip(), n.strip()) for raw in names for n in raw.split(",") if n.strip()}
    if "all" not in named:
        return set()
    by_metric = {f for f, metrics in FAMILY_METRICS.items() if named & set(metrics)}
    return {f for f in WHERE_THEY_APPLY if f not in named and f not in by_metric}


def applies(family: str, context) -> bool:
    """Whether ``family`` can be measured on the series of ``context`` (a SeriesContext)."""
    from grokscope.config import MODULAR_OPS

    if family == "fourier":
        return context.config is not None and context.config.task.name in MODULAR_OPS
    return True
