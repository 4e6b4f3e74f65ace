"""``bertgeom report``: one self-contained HTML file from a results directory, or the comparison
of two (``bertgeom report A B``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bertgeom.cli.common import OverwriteOption, console, start_up, user_errors
from bertgeom.errors import InputError


def report(
    results: Annotated[
        Path,
        typer.Argument(
            help="Results directory written by 'bertgeom analyze', or an over-training "
            "(over-seeds) directory written by 'bertgeom analyze --over-training' "
            "('--over-seeds')."
        ),
    ],
    other: Annotated[
        Path | None,
        typer.Argument(
            metavar="B",
            help="A second results directory (another model, or RESULTS/control, the untrained "
            "control): write a comparison of the two, section by section.",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="HTML file to write (default: RESULTS/report.html; with a second directory B, "
            "RESULTS/compare-<B's folder name>.html).",
        ),
    ] = None,
    over_training: Annotated[
        Path | None,
        typer.Option(
            "--over-training",
            help="An over-training directory of the same model's checkpoints ('bertgeom "
            "analyze --over-training'): the report of RESULTS gains its over-training section "
            "after the findings, as the demo's report does.",
            show_default=False,
        ),
    ] = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Build one self-contained HTML report (figures embedded, opens offline) from results,
    the findings first; with two results directories, compare them section by section."""
    with user_errors():
        with start_up():
            from bertgeom.report.build import (
                OVER_TRAINING_SECTION_IDS,
                SECTION_IDS,
                build_report_summary,
                section_ids,
            )
            from bertgeom.report.compare import build_comparison

        if other is not None and over_training is not None:
            raise InputError("--over-training goes with one results directory, not a comparison")
        ids = section_ids(results) if other is None else SECTION_IDS
        if over_training is not None:
            ids = OVER_TRAINING_SECTION_IDS
        with console.status("reading the results") as status:

            def progress(section_id: str) -> None:
                step = ids.index(section_id) + 1
                status.update(f"drawing {section_id} ({step}/{len(ids)})")

            if other is None:
                summary = build_report_summary(
                    results, out, progress, overwrite=overwrite, over_training=over_training
                )
            else:
                summary = build_comparison(results, other, out, progress, overwrite=overwrite)
        for section_id, problem in summary.problems.items():
            console.print(
                f"[bold yellow]warning:[/] section {section_id} could not be drawn: {problem}",
                highlight=False,
                soft_wrap=True,
            )
        missing = [section for section in summary.missing if section not in summary.problems]
        console.print(
            f"{summary.figures} figures, {summary.size_bytes / 1e6:.1f} MB"
            + (f" (incomplete in the results: {', '.join(missing)})" if missing else "")
            + f" -> {summary.path}",
            highlight=False,
            soft_wrap=True,
        )
