"""The ``grokscope`` command line.

Each command lives in its own module and imports its heavy libraries (torch, pandas, plotnine)
inside the command body, so ``grokscope --help`` starts instantly.
"""

from __future__ import annotations

import functools
import sys

import typer

from grokscope import __version__
from grokscope.cli.output import Output
from grokscope.errors import GrokscopeError

app = typer.Typer(
    name="grokscope",
    help=(
        "Post-hoc analysis of training dynamics from checkpoint series.\n\n"
        "Commands compose in pipelines; each prints the paths it wrote on stdout:\n\n"
        "  grokscope train --weight-decay 0.1,2 --out runs/ | grokscope probe - | "
        "grokscope measure - --metric collapse"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def reports_user_errors(command):
    """Turn a GrokscopeError into one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except GrokscopeError as exc:
            Output().error(str(exc))
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            Output().error("interrupted; files already written are complete, the rest were not written")
            raise typer.Exit(130) from None
        except BrokenPipeError:
            # The reader of stdout went away (e.g. `| head`): nothing left to tell anyone.
            sys.stderr.close()
            raise typer.Exit(1) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        print(f"grokscope {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    pass


COMMANDS = ("train", "probe", "measure", "plot", "report", "demo")


def _register() -> None:
    """One module per command, each exposing a function of the same name, its docstring and EPILOG."""
    import importlib

    for name in COMMANDS:
        module = importlib.import_module(f"grokscope.cli.{name}")
        command = getattr(module, name)
        app.command(name, help=module.__doc__, epilog=module.EPILOG)(reports_user_errors(command))


_register()


def main() -> None:
    app()
