"""Measuring one batch of series: in the command's process checkpoint by checkpoint, or on the
executor's workers as tasks of consecutive checkpoints; and what a finished series says.

Grokking (from the history) and the cheap checkpoint families (weights) are always measured in
the command's process; the feature families and the checkpoint families that run the model
(complexity, fourier) go to the workers when there are any. Rows come back to this process,
which alone writes the tables (saved as they go).
"""

from __future__ import annotations

from pathlib import Path

from grokscope import formats
from grokscope.errors import GrokscopeError
from grokscope.execution import Executor, failure_message, set_threads
from grokscope.families import feature_steps, grokking
from grokscope.families.checkpoints import CHECKPOINT_FAMILIES, checkpoint_rows
from grokscope.families.problems import Problem, describe_nan
from grokscope.pipeline.reporter import Progress, Recording
from grokscope.pipeline.tables import SeriesTables, merged, save_every
from grokscope.pipeline.tasks import SeriesTasks, chunk, parts_per_series


class Measuring:
    """What the batches of one ``measure`` share: the reporter and its progress bar, the tables
    of every series measured so far, and what could not be measured."""

    def __init__(self, say: Recording, bar: Progress, wanted, options, *, write: bool):
        self.say, self.bar, self.wanted, self.options, self.write = say, bar, wanted, options, write
        self.every = save_every()
        self.task = bar.add_task("measure", total=0)
        self.total = 0
        self.results: dict[Path, SeriesTables] = {}  # home -> its tables, over every batch
        self.printed: set[Path] = set()
        self.failures: dict[str, None] = {}  # messages of checkpoints that could not be measured, once each
        self.failed_series: list[str] = []

    def count(self, n_steps: int) -> None:
        self.total += n_steps
        self.bar.update(self.task, total=self.total)

    def advance(self, n: int) -> None:
        self.bar.advance(self.task, n)

    def tables(self, plan) -> SeriesTables:
        root = plan.series.root
        return SeriesTables(plan, self.options, write=self.write, every=self.every, on_wait=lambda holder: self.say.warn(
            f"{root}: waiting for {holder} to finish updating its measure tables"))

    def finish(self, plan, tables: SeriesTables, problems: list, error: str | None = None) -> None:
        """A series is done: save, report, say its tables' paths."""
        root = plan.series.root
        tables.save()
        if error is not None:
            # The series as a whole cannot be measured (changed split, one class): said once,
            # the other series go on, and what it had measured is kept.
            message = error if str(root) in error else f"{root}: {error}"
            self.say.error(message)
            self.failed_series.append(message)
            return
        self.failures.update(dict.fromkeys(report_problems(self.say, root, problems)))
        for family in self.wanted if self.write else ():
            path = formats.tables.measures_path(plan.series.home, family)
            if path.is_file() and path not in self.printed:  # measured now or before: the next command's input
                self.printed.add(path)
                self.say.result(path)
        self.results[plan.series.home] = merged(self.results.get(plan.series.home), tables)


def measure_batch(plans: list, measuring: Measuring, executor: Executor, device: str) -> None:
    """Measure the series of one batch, each into its tables; on Ctrl-C (or any error) save what
    was measured, so that the next run computes only the rest."""
    open_tables = [measuring.tables(plan) for plan in plans]
    try:
        if executor.in_process:
            for plan, tables in zip(plans, open_tables):
                measuring.bar.update(measuring.task, description=plan.columns["run"])
                try:
                    problems = measure_series(plan, measuring.options, executor, device, measuring.advance, tables)
                except GrokscopeError as exc:
                    measuring.finish(plan, tables, [], str(exc))
                    continue
                measuring.finish(plan, tables, problems)
        else:
            measuring.bar.update(measuring.task, description=f"measure on {executor.description}")
            measure_elsewhere(plans, open_tables, measuring, executor, device)
    except BaseException:
        for tables in open_tables:
            tables.save()
        raise


def measure_series(plan, options, executor: Executor, device: str, advance, tables: SeriesTables) -> list:
    """Measure one series in this process into ``tables`` (saved as it goes, checkpoint by
    checkpoint); return the problems met."""
    set_threads(executor.threads.per_task)
    feature_todo, feature_steps_todo = plan.feature_todo()
    problems = measure_here(plan, options, tables, advance)
    problems += _checkpoint_families(plan, plan.pooled_families(), options, device, tables,
                                     set(feature_steps_todo), advance)
    if not feature_steps_todo:
        return problems

    def on_step(step, found):
        for family, rows in found.items():
            tables.add(family, rows)
        advance(1)
        tables.save_if_due()

    _, found = feature_steps.measure_steps(plan.series, feature_todo, options, device, on_step=on_step)
    return problems + found


def measure_here(plan, options, tables: SeriesTables, advance) -> list:
    """The families measured in the command's process whatever the executor: grokking (from the
    history) and the cheap checkpoint families (weights). Returns the problems met."""
    problems: list = []
    if plan.todo.get("grokking"):
        rows, found = grokking.grokking_table_rows(plan.series, options)
        tables.add("grokking", rows)
        problems += [Problem.of(p) for p in found]
        advance(0)
    counted = set(plan.feature_todo()[1]) | {s for f in plan.pooled_families() for s in plan.todo[f]}
    return problems + _checkpoint_families(plan, plan.cheap_families(), options, "cpu", tables, counted, advance)


def _checkpoint_families(plan, families, options, device: str, tables: SeriesTables, counted: set, advance) -> list:
    """Measure ``families`` (of CHECKPOINT_FAMILIES) in this process, checkpoint by checkpoint,
    into ``tables``; a checkpoint advances the bar once, whichever family visits it (``counted``:
    the steps already counted). Returns the problems met."""
    problems: list = []
    for family in families:
        for step, rows, found in CHECKPOINT_FAMILIES[family](plan.series, plan.todo[family], options, device):
            tables.add(family, rows)
            problems += [Problem.of(p) for p in found]
            if step not in counted:
                counted.add(step)
                advance(1)
            tables.save_if_due()
    return problems


def measure_elsewhere(plans: list, open_tables: list[SeriesTables], measuring: Measuring, executor: Executor,
                      device: str) -> None:
    """Measure the series of one batch on the executor's workers: tasks of consecutive
    checkpoints of one series (each loads the model and data once), all series' tasks at once so
    that every worker has work. A series is finished when its last task is in."""
    options, advance = measuring.options, measuring.advance
    parts = parts_per_series(executor, len(plans))
    work = SeriesTasks()
    state = []
    for index, (plan, tables) in enumerate(zip(plans, open_tables)):
        root = plan.series.root
        problems = measure_here(plan, options, tables, advance)
        feature_todo, steps = plan.feature_todo()
        work.expect(index)
        for part in chunk(steps, parts) if steps else []:
            part_set = set(int(s) for s in part)
            todo = {f: [s for s in wanted if s in part_set] for f, wanted in feature_todo.items()}
            work.add(index, feature_steps.measure_steps, (plan.series, todo, options, device), weight=len(part),
                     label=f"{root} (steps {part[0]}-{part[-1]})", what=("features", part))
        for family in plan.pooled_families():
            for part in chunk(plan.todo[family], parts):
                work.add(index, checkpoint_rows, (family, plan.series, part, options, device),
                         label=f"{root} ({family}, steps {part[0]}-{part[-1]})", what=(family, part))
        state.append({"problems": problems, "counted": set(steps), "error": None})

    def on_outcome(index, what, outcome) -> None:
        family, part = what
        tables, mine = open_tables[index], state[index]
        if outcome.error is not None:
            if isinstance(outcome.error, GrokscopeError):
                mine["error"] = mine["error"] or str(outcome.error)  # the series' own problem, once
            else:  # a worker that kept dying, a system error: these steps are lost, the rest goes on
                message = failure_message(outcome)
                measuring.say.error(message)
                measuring.failures[message] = None
        elif family == "features":
            rows, found = outcome.result
            for name, new in rows.items():
                tables.add(name, new)
            mine["problems"] += found
        else:
            rows, found = outcome.result
            tables.add(family, rows)
            mine["problems"] += found
        if family == "features":
            advance(len(part))
        else:
            new = [s for s in part if s not in mine["counted"]]
            mine["counted"].update(new)
            advance(len(new))
        tables.save_if_due()

    def on_done(index) -> None:
        measuring.finish(plans[index], open_tables[index], state[index]["problems"], state[index]["error"])

    work.run(executor, on_outcome, on_done)


def report_problems(say: Recording, root, problems) -> list[str]:
    """Say the problems of one series: each error once, NaN values once per reason with their
    steps. Returns the error messages (a checkpoint that could not be measured), once each."""
    errors: dict[str, None] = {}
    nan: dict[tuple, list[int]] = {}
    for problem in dict.fromkeys(Problem.of(p) for p in problems):
        if problem.kind == "error":
            say.error(problem.message)
            errors[problem.message] = None
        elif problem.kind == "nan":
            nan.setdefault((problem.family, problem.message), []).append(problem.step)
        else:
            say.warn(problem.message)
    for (family, reason), steps in nan.items():
        say.warn(describe_nan(root, family, reason, sorted(set(steps))))
    return list(errors)
