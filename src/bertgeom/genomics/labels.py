"""Labels TSVs (an id column and a ``label`` column) for ``data prepare`` and ``analyze``: read
with the checks every text input gets (:mod:`bertgeom.genomics.text_lines`), each id with one
label, and, where the labels must be known classes, each label checked."""

from __future__ import annotations

import difflib
import io
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from bertgeom.errors import InputError
from bertgeom.genomics.text_lines import read_lines

_NAMED = 5
"""Offenders a message names before it says how many more there are."""


def _named(items: Sequence[str]) -> str:
    more = f", and {len(items) - _NAMED} more" if len(items) > _NAMED else ""
    return ", ".join(items[:_NAMED]) + more


def read_label_table(path: str | Path, id_columns: Sequence[str]) -> dict[str, str]:
    """The labels of a TSV by id: the first of ``id_columns`` the file has, and ``label``.

    A row repeated identically counts once; an id given two different labels is refused (which
    was meant cannot be known, and keeping the last one silently moved records between classes),
    as is a row with an empty id or label. A UTF-8 byte order mark is accepted.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: labels file not found")
    text = "\n".join(line for _, line in read_lines(path, "a labels TSV"))
    try:
        table = pd.read_csv(io.StringIO(text), sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise InputError(f"{path}: not a readable TSV ({error})") from error
    id_column = next((column for column in id_columns if column in table.columns), None)
    if id_column is None or "label" not in table.columns:
        ids = id_columns[0] + "".join(f" (or {column})" for column in id_columns[1:])
        raise InputError(f"{path}: a labels TSV needs the columns {ids} and label")
    pairs = table[[id_column, "label"]].apply(lambda column: column.str.strip())
    empty = pairs.index[(pairs[id_column] == "") | (pairs["label"] == "")]
    if len(empty):
        raise InputError(
            f"{path}: row {empty[0] + 1} after the header has an empty {id_column} or label "
            f"({len(empty)} such rows); give every row both"
        )
    pairs = pairs.drop_duplicates()
    _refuse_conflicts(pairs, id_column, path)
    return dict(zip(pairs[id_column], pairs["label"], strict=True))


def _refuse_conflicts(pairs: pd.DataFrame, id_column: str, path: Path) -> None:
    conflicting = pairs[pairs[id_column].duplicated(keep=False)]
    if conflicting.empty:
        return
    groups = conflicting.groupby(id_column, sort=False)["label"].agg(list)
    named = [
        f"{record_id!r} ({', '.join(map(repr, labels))})" for record_id, labels in groups.items()
    ]
    raise InputError(
        f"{path}: {len(named)} {id_column}s have more than one label: {_named(named)}; "
        "give each one label"
    )


def suggestion(label: str, known: Iterable[str]) -> str | None:
    """The known label ``label`` was probably meant as (same letters in another case, else
    the closest spelling), or None."""
    known = list(known)
    same = [name for name in known if name.casefold() == label.casefold()]
    close = same or difflib.get_close_matches(label, known, n=1, cutoff=0.8)
    return close[0] if close else None


def refuse_unknown_labels(
    labels: Mapping[str, str], path: str | Path, known: Sequence[str], known_text: str
) -> None:
    """Raise :class:`InputError` naming the labels that are not in ``known`` (case counts),
    with their record counts and a suggestion; ``known_text`` says what the known labels are."""
    unknown = Counter(label for label in labels.values() if label not in known)
    if not unknown:
        return
    named = []
    for label, count in unknown.most_common():
        meant = suggestion(label, known)
        hint = f"; did you mean {meant!r}?" if meant else ""
        named.append(f"{label!r} ({count} record{'s' if count > 1 else ''}{hint})")
    total = sum(unknown.values())
    raise InputError(
        f"{path}: {total} record{'s have labels' if total > 1 else ' has a label'} that "
        f"{'are' if total > 1 else 'is'} not a class: {_named(named)}; {known_text}"
    )
