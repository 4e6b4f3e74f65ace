"""The ``bertgeom`` command: the app that assembles the commands (data, analyze, report,
predict, train, evaluate, demo) and its console script."""

from __future__ import annotations

import gc
import sys

import typer

from bertgeom.cli.analyze import analyze
from bertgeom.cli.classifier import evaluate, predict, train
from bertgeom.cli.common import console
from bertgeom.cli.data import data_app
from bertgeom.cli.demo import demo
from bertgeom.cli.report import report

try:  # typer >= 0.22 vendors click as typer._click; older versions use click itself
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

app = typer.Typer(
    name="bertgeom",
    help="The geometry of BERT: a SARS-CoV-2 variant classifier and the analysis of BERT encoders.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data_app, name="data")
app.command()(analyze)
app.command()(report)
app.command()(predict)
app.command()(train)
app.command()(evaluate)
app.command()(demo)


def main() -> None:
    """The ``bertgeom`` console script: the app, with a bad option or argument said in one
    line (exit 2, as click does), then an exit that skips the last garbage collection
    (``gc.freeze``): at shutdown Python walks every object still alive, about a second after
    torch is imported, to free memory the operating system frees anyway."""
    try:
        code = app(standalone_mode=False)
    except click_exceptions.NoArgsIsHelpError as error:
        error.show()  # the help text, as 'bertgeom' alone has always printed it
        code = error.exit_code
    except click_exceptions.ClickException as error:
        context = getattr(error, "ctx", None)  # usage errors know their command
        command = context.command_path if context is not None else "bertgeom"
        console.print(
            f"[bold red]error:[/] {error.format_message()} (see '{command} --help')",
            highlight=False,
            soft_wrap=True,
        )
        code = error.exit_code
    except typer.Abort:
        console.print("[bold red]aborted:[/] no output was written", highlight=False)
        code = 1
    finally:
        gc.freeze()
    sys.exit(code if isinstance(code, int) else 0)
