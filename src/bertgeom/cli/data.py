"""``bertgeom data``: prepare real spikes, synthesise spikes, split by unique sequence."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import pandas as pd
import typer

from bertgeom.atomic import atomic_file
from bertgeom.cli.common import SeedOption, console, split_fractions, start_up, user_errors
from bertgeom.errors import InputError
from bertgeom.outputs import check_output_file, starts_with

if TYPE_CHECKING:
    from bertgeom.genomics.dataset import LabelMatch
    from bertgeom.genomics.synthetic import Background

data_app = typer.Typer(
    help="Build the case study's dataset: prepare, synthesize, split.", no_args_is_help=True
)


PARQUET = starts_with(b"PAR1")
"""A Parquet file: a dataset directory's tables are replaced, nothing else of the user's."""


def _check_table(path: Path, inputs: list[Path | None] | None = None) -> None:
    """Refuse, before any work, a table path that would replace a user's file."""
    check_output_file(path, recognise=PARQUET, inputs=inputs or [], option="--out")


def _write_parquet(table: pd.DataFrame, path: Path) -> None:
    with atomic_file(path) as partial:
        table.to_parquet(partial, index=False)


@data_app.command()
def prepare(
    out: Annotated[
        Path, typer.Option("--out", help="Dataset directory (real.parquet is written).")
    ],
    fasta: Annotated[
        list[Path] | None,
        typer.Option("--fasta", help="Your genomes (repeatable); default: the embedded ones."),
    ] = None,
    labels: Annotated[
        Path | None, typer.Option("--labels", help="TSV with record_id and label, for --fasta.")
    ] = None,
) -> None:
    """Align labelled genomes and cut out their spikes, with QC (one row per record)."""
    with user_errors():
        with start_up():
            from bertgeom.genomics.dataset import LabelMatch, read_labels, real_spikes

        if fasta and labels is None:
            raise InputError("--fasta needs --labels (a TSV with columns record_id and label)")
        _check_table(out / "real.parquet", [*(fasta or []), labels])
        match = LabelMatch()
        with console.status("aligning genomes"):
            table = real_spikes(fasta or None, read_labels(labels) if labels else None, match)
        if table.empty:
            raise InputError(
                f"no labelled record found: none of the {match.labels} record ids of {labels} "
                f"names one of the {match.records} FASTA records (a record id is the header up "
                "to the first white space)"
            )
        _write_parquet(table, out / "real.parquet")
        counts = table.groupby(["label", "status"]).size().to_dict()
        console.print(
            f"{len(table)} records -> {out / 'real.parquet'}; {counts}" + _match_note(match),
            highlight=False,
        )


def _match_note(match: LabelMatch) -> str:
    """What the labels and the FASTA records did not share, for the summary line."""
    notes = []
    if match.unlabelled:
        plural = "s" * (match.unlabelled != 1)
        notes.append(f"{match.unlabelled} FASTA record{plural} without a label (skipped)")
    if match.unmatched_labels:
        plural = "s" * (match.unmatched_labels != 1)
        notes.append(f"{match.unmatched_labels} label{plural} naming no FASTA record")
    return "; " + "; ".join(notes) if notes else ""


def _backgrounds(
    real_path: Path, fractions: tuple[float, float, float], seed: int
) -> tuple[Background, ...]:
    """``training_backgrounds`` of a prepared ``real.parquet``, its failures in one line."""
    from bertgeom.genomics.dataset import training_backgrounds

    try:  # as in 'data split': an unreadable table, or one without the columns it needs
        return training_backgrounds(pd.read_parquet(real_path), fractions, seed)
    except (ValueError, OSError, KeyError) as error:
        why = f"no column {error}" if isinstance(error, KeyError) else str(error)
        raise InputError(f"{real_path}: cannot read its spikes ({why})") from error


@data_app.command()
def synthesize(
    out: Annotated[
        Path, typer.Option("--out", help="Dataset directory (synthetic.parquet is written).")
    ],
    train: Annotated[int, typer.Option(min=0, help="Spikes per class for training.")] = 250,
    validation: Annotated[int, typer.Option(min=0, help="Spikes per class for validation.")] = 40,
    test: Annotated[int, typer.Option(min=0, help="Spikes per class for testing.")] = 60,
    seed: SeedOption = 42,
    fasta: Annotated[
        Path | None, typer.Option("--fasta", help="Also write the spikes as FASTA.")
    ] = None,
    outliers: Annotated[
        bool,
        typer.Option(
            help="Add spikes of no class (recombinants, novel lineages), trained to be uncertain."
        ),
    ] = False,
    fractions: Annotated[
        tuple[float, float, float],
        typer.Option(
            callback=split_fractions,
            help="With OUT/real.parquet: the shares 'data split' will use (give it the same, and "
            "the same --seed), so that the backgrounds come from training spikes only.",
        ),
    ] = (0.7, 0.15, 0.15),
) -> None:
    """Draw synthetic spikes for the eight classes from the mutation profiles (seeded); with
    OUT/real.parquet ('data prepare'), half of them on the backgrounds of its real pre-VOC
    training spikes."""
    with user_errors():
        with start_up():
            from bertgeom.genomics.dataset import synthetic_spikes
            from bertgeom.genomics.fasta import write_fasta

        if train + validation + test == 0:
            raise InputError("--train, --validation and --test are all 0: nothing to draw")
        _check_table(out / "synthetic.parquet")
        if fasta is not None:
            check_output_file(fasta, recognise=starts_with(b">synthetic-"), option="--fasta")
        real_path = out / "real.parquet"
        backgrounds = _backgrounds(real_path, fractions, seed) if real_path.is_file() else ()
        table = synthetic_spikes((train, validation, test), seed, outliers, backgrounds=backgrounds)
        _write_parquet(table, out / "synthetic.parquet")
        if fasta is not None:
            with atomic_file(fasta) as partial:
                write_fasta(
                    [
                        (f"{r.record_id} class={r.label} mutations={r.mutations}", str(r.sequence))
                        for r in table.itertuples()
                    ],
                    partial,
                )
        drawn_on = (
            f", half on the backgrounds of {len(backgrounds)} real pre-VOC training spikes"
            if backgrounds
            else ""
        )
        console.print(
            f"{len(table)} synthetic spikes{drawn_on} -> {out / 'synthetic.parquet'}",
            highlight=False,
        )


@data_app.command()
def split(
    directory: Annotated[
        Path, typer.Argument(help="Dataset directory with real.parquet (and synthetic.parquet).")
    ],
    fractions: Annotated[
        tuple[float, float, float],
        typer.Option(
            callback=split_fractions, help="Train, validation, test shares of unique real spikes."
        ),
    ] = (0.7, 0.15, 0.15),
    seed: SeedOption = 42,
) -> None:
    """Split by unique spike sequence, stratified by class: dataset.parquet and outside.parquet."""
    with user_errors():
        with start_up():
            from bertgeom.genomics.dataset import split_dataset

        real_path, synthetic_path = directory / "real.parquet", directory / "synthetic.parquet"
        if not real_path.is_file():
            raise InputError(
                f"{directory}: no real.parquet; run 'bertgeom data prepare --out {directory}' first"
            )
        for name in ("outside.parquet", "dataset.parquet"):
            _check_table(directory / name)
        try:  # pyarrow's errors for a file that is not Parquet are ValueErrors or OSErrors
            synthetic = pd.read_parquet(synthetic_path) if synthetic_path.is_file() else None
            real = pd.read_parquet(real_path)
            dataset, outside = split_dataset(real, synthetic, fractions, seed)
        except (ValueError, OSError, KeyError) as error:
            # pyarrow's unreadable files, a table without a column split_dataset needs
            why = f"no column {error}" if isinstance(error, KeyError) else str(error)
            raise InputError(f"{directory}: cannot split ({why})") from error
        _write_parquet(outside, directory / "outside.parquet")
        _write_parquet(dataset, directory / "dataset.parquet")
        table = pd.crosstab(dataset["label"] + " (" + dataset["source"] + ")", dataset["split"])
        console.print(table.to_string(), highlight=False)
        labels = real[real["sequence"].str.len() > 0].groupby("sequence")["label"].nunique()
        if (labels > 1).any():
            console.print(
                f"note: {int((labels > 1).sum())} spike sequences carry two or more labels and are "
                "left out of both tables (check the labels of their records in real.parquet)",
                highlight=False,
                soft_wrap=True,
            )
