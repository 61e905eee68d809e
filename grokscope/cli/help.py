"""How ``--help`` reads: conventional metavars (``PATH``, ``INT``, ``FLOAT``, ``TEXT``; flags
none), usage lines as ``KIND PATH...``, and each command's options grouped in panels.

A command module may name its panels in ``PANELS`` (panel title -> parameter names, in order);
options it leaves out go to the last panel, "Other options". An option that sets its own
``metavar`` keeps it (train's sweepable options say ``LIST``).
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path

import typer
from typer.core import TyperArgument, TyperCommand
from typer.models import ArgumentInfo, OptionInfo

OTHER_PANEL = "Other options"
# typer's own option, added when the command is built: it goes with the command's last panel.
HELP_OPTION = "help"


def metavar_of(annotation) -> str:
    """The conventional metavar of a parameter of this type; ``""`` for a flag."""
    if typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is list:
        annotation = typing.get_args(annotation)[0]
    return {bool: "", int: "INT", float: "FLOAT", Path: "PATH"}.get(annotation, "TEXT")


def styled(command, panels: dict[str, tuple[str, ...]] | None = None):
    """``command`` with a metavar on every option and argument that has none, and its options in
    ``panels``. Changes the typer defaults in its signature, which typer reads when it builds the
    command."""
    hints = typing.get_type_hints(command)
    panel_of = {name: title for title, names in (panels or {}).items() for name in names}
    for name, parameter in inspect.signature(command).parameters.items():
        info = parameter.default
        if not isinstance(info, (OptionInfo, ArgumentInfo)):
            continue
        if info.metavar is None:
            metavar = metavar_of(hints[name])
            if isinstance(info, ArgumentInfo):
                metavar = name.upper() + ("..." if typing.get_origin(_bare(hints[name])) is list else "")
            info.metavar = metavar
        if isinstance(info, OptionInfo) and panels:
            info.rich_help_panel = panel_of.get(name, OTHER_PANEL)
    return command


def _bare(annotation):
    if typing.get_origin(annotation) is typing.Union:
        return next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


class Command(TyperCommand):
    """A command whose usage line reads ``grokscope plot [OPTIONS] KIND INPUTS...``, whose
    arguments show their metavar once (not again as ``<list[str]>``), and whose usage mistakes
    (an unknown option, a value of the wrong type) are one line and exit 2, as every other mistake."""

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except _usage_error() as exc:
            from grokscope.cli.output import Output

            Output().error(f"{' '.join(exc.format_message().split())} (see {ctx.command_path} --help)")
            raise typer.Exit(2) from None

    def collect_usage_pieces(self, ctx):
        pieces = [self.options_metavar] if self.get_params(ctx) else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                pieces.append(param.display_name_raw if param.required else f"[{param.display_name_raw}]")
        return pieces

    # The command's panels in the order its PANELS names them (typer shows them as first met).
    panel_order: tuple[str, ...] = ()

    def get_params(self, ctx):
        order = {title: i for i, title in enumerate((*self.panel_order, OTHER_PANEL))}
        params = sorted(super().get_params(ctx), key=lambda p: order.get(getattr(p, "rich_help_panel", None), -1))
        for param in params:
            if isinstance(param, TyperArgument):
                param.display_type_rich = _no_type
            elif param.name == HELP_OPTION and getattr(param, "rich_help_panel", None) is None:
                last = [p.rich_help_panel for p in params if getattr(p, "rich_help_panel", None)]
                param.rich_help_panel = last[-1] if last else None
                param.metavar = ""
        return params


def _usage_error() -> type[Exception]:
    """click's UsageError: typer 0.2x carries its own copy of click, earlier ones use click's."""
    try:
        from typer._click.exceptions import UsageError
    except ImportError:
        from click import UsageError
    return UsageError


def _no_type(ctx) -> None:
    return None


def register(app: typer.Typer, name: str, module, wrap, epilog: str) -> None:
    """Add ``module``'s command ``name`` to ``app`` with its docstring, ``epilog`` and panels."""
    panels = getattr(module, "PANELS", None)
    command = styled(getattr(module, name), panels)
    cls = type(f"{name.title()}Command", (Command,), {"panel_order": tuple(panels or ())})
    app.command(name, cls=cls, help=module.__doc__, epilog=epilog)(wrap(command))
