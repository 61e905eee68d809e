"""The ``subnet`` figure: a run, its synergistic sub-network and the inverse, trained alike."""

from __future__ import annotations

import pandas as pd

from grokscope.errors import GrokscopeError
from grokscope.plotting import style
from grokscope.plotting.data import Tables

ROLE_COLOURS = {"original": "#222222", "sub-network": "#1f77b4", "inverse": "#d62728"}
SPLIT_LINES = {"test": "solid", "train": "dotted"}


def subnet(tables: Tables, options: style.FigureOptions):
    """Train and test accuracy against step of the original run, its sub-network(s) and their
    inverses (Clauw et al. 2024, Figures 6-7), one panel per parent and rule.

    A panel's title gives the rule and the step whose multiplet was taken (also a dashed vertical
    line); the number of hidden neurons each network trains is written in its colour. Sub-networks are recognised by
    their ``parent_run`` column (written by ``grokscope subnet``), their parent by its name.
    """
    import plotnine as p9

    if options.color or options.facet:
        raise GrokscopeError("--color/--facet: the subnet figure colours by role and has one panel per parent and rule")
    history = tables.history
    if history.empty or "parent_run" not in history.columns or history["parent_run"].isna().all():
        raise GrokscopeError("nothing to plot: no sub-networks among the inputs (train them with "
                             "`grokscope subnet RUN --at RULE --inverse`)")
    children = history[history["parent_run"].notna()]
    frames, events, sizes = [], [], []
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
                role = "inverse" if bool(rows["subnet_inverse"].iloc[0]) else "sub-network"
                members.append((rows, role, rows["subnet_neurons"].iloc[0]))
            panel = f"{parent}\n--at {rule}: step {step}"
            frames += [rows.assign(role=role, panel=panel) for rows, role, _ in members]
            events.append({"panel": panel, "step": step})
            sizes += [{"panel": panel, "role": role, "label": f"{int(size)} neurons", "order": i}
                      for i, (_, role, size) in enumerate(members) if pd.notna(size)]
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
    return (
        p9.ggplot(data, p9.aes("step", "accuracy", color="role", linetype="split", group="line"))
        + p9.geom_vline(p9.aes(xintercept="step"), data=pd.DataFrame(events), color="#999999", size=0.4,
                        linetype="dashed")
        + p9.geom_line(size=0.7)
        + p9.geom_text(p9.aes(x="step", y="accuracy", color="role", label="label"), data=labels,
                       inherit_aes=False, ha="left", va="top", size=7, show_legend=False)
        + p9.scale_color_manual(values=ROLE_COLOURS, drop=True)
        + p9.scale_linetype_manual(values=SPLIT_LINES)
        + p9.scale_y_continuous(limits=(0, 1))
        + style.log_step_axis()
        + p9.labs(y="accuracy", color="", linetype="")
        + p9.facet_wrap("panel")
        + style.theme(options)
    )
