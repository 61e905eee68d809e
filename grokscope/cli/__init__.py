"""The ``grokscope`` command line.

Each command lives in its own module and imports its heavy libraries (torch, pandas, plotnine)
inside the command body, so ``grokscope --help`` starts instantly.
"""

from __future__ import annotations

import typer

from grokscope.cli import endings
from grokscope.version import __version__

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


def _version(value: bool) -> None:
    if value:
        print(f"grokscope {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    pass


COMMANDS = ("train", "probe", "measure", "plot", "report", "onsets", "export", "subnet", "predict", "demo")


def _register() -> None:
    """One module per command, each exposing a function of the same name, its docstring and EPILOG."""
    import importlib

    from grokscope.cli import help

    for name in COMMANDS:
        module = importlib.import_module(f"grokscope.cli.{name}")
        help.register(app, name, module, endings.reports_user_errors, _reflowed(module.EPILOG))


def _reflowed(epilog: str) -> str:
    """Prose paragraphs as one line each, so that help wraps them to the terminal's width (rich
    keeps every newline it is given); indented lines (examples) stay as written."""
    paragraphs = epilog.strip("\n").split("\n\n")
    return "\n\n".join(p if any(line.startswith(" ") for line in p.splitlines()) else " ".join(p.split("\n"))
                       for p in paragraphs)


_register()


def main() -> None:
    """The console script: ``app``, with Ctrl-C turned into one line and exit code 130 at any instant."""
    endings.run(app)
