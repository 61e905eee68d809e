"""The ``subnet`` figure: a run, its synergistic sub-network, the inverse and size-matched random
controls, trained alike."""

from __future__ import annotations

import pandas as pd

from grokscope.errors import GrokscopeError
from grokscope.measures.grokking import grokking_summary
from grokscope.plotting import style
from grokscope.plotting.data import Tables

ROLE_COLOURS = {"original": "#222222", "sub-network": "#1f77b4", "inverse": "#d62728", "random control": "#999999"}
SPLIT_LINES = {"test": "solid", "train": "dotted"}
# The strip below the curves where each network's generalisation step is marked, a row per role.
STRIP_ROWS = {"original": -0.05, "sub-network": -0.09, "inverse": -0.13, "random control": -0.17}
CAPTION = ("Points below the curves: each network's generalisation step (first evaluation with test "
           "accuracy >= {:g}), a row per role;\nx at the right edge: never within the run "
           "(how many controls never generalise is written beside their row).")


def subnet(tables: Tables, options: style.FigureOptions):
    """Train and test accuracy against step of the original run, its sub-network(s), their
    inverses and their size-matched random controls (Clauw et al. 2024, Figures 6-7), one panel
    per parent and rule.

    A panel's title gives the rule and the step whose multiplet was taken (also a dashed vertical
    line); the number of hidden neurons each network trains is written in its colour. Below the
    curves, a strip marks each network's generalisation step (``--threshold``), so the random
    controls' steps show as a distribution beside the sub-network's and the inverse's; a control
    that never generalises is an x at the right edge. Sub-networks are recognised by their
    ``parent_run`` column (written by ``grokscope subnet``), controls by ``subnet_control``, their
    parent by its name.
    """
    import plotnine as p9

    if options.color or options.facet:
        raise GrokscopeError("--color/--facet: the subnet figure colours by role and has one panel per parent and rule")
    history = tables.history
    if history.empty or "parent_run" not in history.columns or history["parent_run"].isna().all():
        raise GrokscopeError("nothing to plot: no sub-networks among the inputs (train them with "
                             "`grokscope subnet RUN --at RULE --inverse`)")
    children = history[history["parent_run"].notna()]
    frames, events, sizes, marks = [], [], [], []
    for parent, kids in children.groupby("parent_run", sort=True):
        original = history[(history["run"] == parent) & history["parent_run"].isna()]
        if original.empty:
            raise GrokscopeError(f"nothing to plot: the parent run {parent!r} of {kids['run'].iloc[0]} is not "
                                 "among the inputs")
        width = original["width"].iloc[0] if "width" in original.columns else None
        for rule, group in kids.groupby("subnet_rule", sort=True):
            step = int(group["subnet_step"].iloc[0])
            members = [(original, "original", width)]
            for _, rows in group.groupby("run", sort=True):
                members.append((rows, _role(rows), rows["subnet_neurons"].iloc[0]))
            panel = f"{parent}\n--at {rule}: step {step}"
            frames += [rows.assign(role=role, panel=panel) for rows, role, _ in members]
            events.append({"panel": panel, "step": step})
            sizes += _size_labels(panel, members)
            marks += [_generalisation_mark(rows, role, panel, options.threshold) for rows, role, _ in members]
    data = pd.concat(frames, ignore_index=True)
    data = data.melt(id_vars=["run", "step", "role", "panel"], value_vars=["train_acc", "test_acc"],
                     var_name="split", value_name="accuracy")
    data["split"] = data["split"].str.replace("_acc", "", regex=False)
    data = style.positive_steps(data.dropna(subset=["accuracy"]))
    style.require_rows(data, "accuracy rows at steps > 0 (the step axis is logarithmic)")
    data["role"] = pd.Categorical(data["role"], categories=list(ROLE_COLOURS))
    data["line"] = data["run"].astype(str) + "|" + data["split"]
    # Each network's size, in its colour, stacked in the panel's upper left.
    labels = pd.DataFrame(sizes).assign(step=float(data["step"].min()), accuracy=lambda f: 0.97 - 0.07 * f["order"])
    labels["role"] = pd.Categorical(labels["role"], categories=list(ROLE_COLOURS))
    marks = pd.DataFrame(marks)
    marks = marks[marks["step"] > 0].assign(accuracy=lambda f: f["role"].map(STRIP_ROWS))
    never = marks[(marks["role"] == "random control") & (marks["reached"] == "never")].groupby("panel").agg(
        step=("step", "max"), count=("run", "size")).reset_index()
    totals = marks[marks["role"] == "random control"].groupby("panel")["run"].size()
    never = never.assign(accuracy=STRIP_ROWS["random control"], role="random control",
                         label=[f"{n} of {totals[p]} never  " for p, n in zip(never["panel"], never["count"])])
    for frame in (marks, never):
        frame["role"] = pd.Categorical(frame["role"], categories=list(ROLE_COLOURS))
    # Controls drawn first and thin, so the networks they are the control for stay on top.
    controls = data["role"] == "random control"
    return (
        p9.ggplot(data, p9.aes("step", "accuracy", color="role", linetype="split", group="line"))
        + p9.geom_vline(p9.aes(xintercept="step"), data=pd.DataFrame(events), color="#999999", size=0.4,
                        linetype="dashed")
        + p9.geom_hline(yintercept=0.0, color="#dddddd", size=0.3)
        + p9.geom_line(data=data[controls], size=0.35, alpha=0.6)
        + p9.geom_line(data=data[~controls], size=0.7)
        + p9.geom_point(p9.aes(x="step", y="accuracy", color="role", shape="reached"), data=marks,
                        inherit_aes=False, size=2.2, alpha=0.8, show_legend=False)
        + p9.geom_text(p9.aes(x="step", y="accuracy", color="role", label="label"), data=labels,
                       inherit_aes=False, ha="left", va="top", size=7, show_legend=False)
        + p9.geom_text(p9.aes(x="step", y="accuracy", color="role", label="label"), data=never,
                       inherit_aes=False, ha="right", va="center", size=6, show_legend=False)
        + p9.scale_color_manual(values=ROLE_COLOURS, drop=True)
        + p9.scale_shape_manual(values={"yes": "o", "never": "x"})
        + p9.scale_linetype_manual(values=SPLIT_LINES)
        + p9.scale_y_continuous(limits=(min(STRIP_ROWS.values()) - 0.03, 1), breaks=[0, 0.25, 0.5, 0.75, 1])
        + style.log_step_axis()
        + p9.labs(y="accuracy", color="", linetype="", caption=CAPTION.format(options.threshold))
        + p9.facet_wrap("panel")
        + style.theme(options)
        + p9.theme(plot_caption=p9.element_text(size=7, ha="left"))
    )


def _role(rows: pd.DataFrame) -> str:
    if "subnet_control" in rows.columns and pd.notna(rows["subnet_control"].iloc[0]):
        return "random control"
    return "inverse" if bool(rows["subnet_inverse"].iloc[0]) else "sub-network"


def _size_labels(panel: str, members) -> list[dict]:
    """One label per network, the random controls together (``N random controls of n neurons``)."""
    labels, controls = [], [size for _, role, size in members if role == "random control"]
    for _, role, size in members:
        if role != "random control" and pd.notna(size):
            labels.append({"panel": panel, "role": role, "label": f"{int(size)} neurons"})
    if controls:
        sizes = sorted({int(s) for s in controls if pd.notna(s)})
        labels.append({"panel": panel, "role": "random control",
                       "label": f"{len(controls)} random controls of {', '.join(map(str, sizes))} neurons"})
    return [{**label, "order": i} for i, label in enumerate(labels)]


def _generalisation_mark(rows: pd.DataFrame, role: str, panel: str, threshold: float) -> dict:
    """Where a network's generalisation step sits on the strip: that step, or (``never``) its last."""
    summary = grokking_summary(rows[["step", "train_acc", "test_acc"]], threshold=threshold)
    reached = summary["generalization_step"]
    return {"panel": panel, "role": role, "run": rows["run"].iloc[0],
            "step": float(reached if reached is not None else summary["last_step"]),
            "reached": "yes" if reached is not None else "never"}
