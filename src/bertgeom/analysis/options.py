"""What an analysis is asked: where its inputs come from (``InputSpec``, opened by
``open_source``) and its parameters (``AnalysisOptions``, the heads whose maps are kept)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bertgeom.capture.input_labels import read_input_labels
from bertgeom.capture.input_source import InputSource
from bertgeom.capture.kmer_sources import DatasetSource, FastaSource
from bertgeom.capture.loading import LoadedModel
from bertgeom.capture.text_source import TextSource
from bertgeom.errors import InputError
from bertgeom.measures.cluster import DEFAULT_CLUSTER_ROWS
from bertgeom.measures.gates import DEFAULT_WINDOW

CONTROL_RANDOM_INIT = "random-init"
CONTROL_DIRECTORY = "control"
"""Where the untrained control's results go, inside the trained analysis's directory."""

MAP_HEADS_BUDGET = 48
"""Class-mean maps are kept for every head when layers x heads <= this; otherwise, unless
heads are chosen, for the first ``MAP_HEADS_BUDGET // layers`` heads of each layer."""

InputKind = Literal["text", "fasta", "data"]
ProgressCallback = Callable[[int], None]
"""Called with the number of inputs of each finished batch."""


@dataclass(frozen=True)
class InputSpec:
    """Where the inputs come from: ``kind`` text, fasta or data (a dataset directory),
    ``labels`` a TSV for text and FASTA, ``split`` one split of a dataset."""

    kind: InputKind
    path: Path
    labels: Path | None = None
    split: str | None = None


@dataclass(frozen=True)
class AnalysisOptions:
    """Parameters of an analysis (all recorded in the manifest).

    ``map_heads``: (layer, head) pairs whose class-mean maps are kept, or their text form for
    ``parse_heads`` (None: see ``default_map_heads``); ``map_length``: positions kept in the
    maps (default: the longest input when the source knows it up front, else the maximum
    input length); ``global_measures``: also the cone index, the distribution of the stream
    and the ``[CLS]`` separability (``layers.parquet``, the head cone metrics, histograms and
    PCA); ``input_records``: write
    ``inputs.parquet``; ``overlap``: measure on a second thread while the forward pass goes on
    (same results, see ``capture.engine``); ``scheduler``: the address of a running Dask
    scheduler, or ``dask_workers``: a local Dask cluster of that many worker processes, to
    shard the inputs over (``bertgeom.scale``, ``docs/dask.md``; same results to float
    tolerance; the executor that does it comes from ``bertgeom.scale``, see
    ``analysis.executor``). ``ablation``: kinds of head ablation
    (``capture.ablation.ABLATION_KINDS``) whose classifier metrics go to ``ablation.parquet``;
    ``control``: ``"random-init"`` also analyses the same architecture at its initial weights
    (seed ``control_seed``) into ``control/``; ``initial_weights_seed``: analyse those initial
    weights instead of the trained ones.
    """

    batch_size: int = 32
    max_length: int | None = None
    max_inputs: int | None = None
    include_padding: bool = False
    map_heads: str | tuple[tuple[int, int], ...] | None = None
    map_length: int | None = None
    global_measures: bool = True
    input_records: bool = True
    device: str = "cpu"
    overlap: bool = False
    window: int = DEFAULT_WINDOW
    cluster_rows: int | None = DEFAULT_CLUSTER_ROWS
    scheduler: str | None = None
    dask_workers: int | None = None
    ablation: tuple[str, ...] = ()
    control: str | None = None
    control_seed: int = 0
    initial_weights_seed: int | None = None

    @property
    def on_cluster(self) -> bool:
        """Whether the options ask for a Dask cluster (``scheduler`` or ``dask_workers``)."""
        return self.scheduler is not None or self.dask_workers is not None


@dataclass
class AnalysisSummary:
    """What the command prints: counts, timings and the results path."""

    out: Path
    inputs: int
    seconds: float
    skipped: dict[str, int] = field(default_factory=dict)
    truncated: int = 0
    labels_unmatched: int = 0


def default_map_heads(n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    """Every head when ``n_layers * n_heads <= 48``, else the first ``max(1, 48 // n_layers)``
    heads of every layer."""
    per_layer = (
        n_heads if n_layers * n_heads <= MAP_HEADS_BUDGET else max(1, MAP_HEADS_BUDGET // n_layers)
    )
    return [(layer, head) for layer in range(n_layers) for head in range(min(per_layer, n_heads))]


def parse_heads(text: str, n_layers: int, n_heads: int) -> tuple[tuple[int, int], ...]:
    """``"all"`` or comma-separated ``layer:head`` pairs (0-based; ``layer:*`` for every head
    of a layer), e.g. ``"0:3,2:*"``."""
    if text.strip() == "all":
        return tuple((lay, h) for lay in range(n_layers) for h in range(n_heads))
    pairs: list[tuple[int, int]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        layer_text, _, head_text = part.partition(":")
        try:
            layer = int(layer_text)
            heads = range(n_heads) if head_text == "*" else [int(head_text)]
        except ValueError:
            raise InputError(f"--heads: {part!r} is not layer:head (e.g. 0:3 or 2:*)") from None
        for head in heads:
            if not (0 <= layer < n_layers and 0 <= head < n_heads):
                raise InputError(
                    f"--heads: {layer}:{head} is outside this {n_layers}-layer, "
                    f"{n_heads}-head model (0-based)"
                )
            pairs.append((layer, head))
    if not pairs:
        raise InputError("--heads: give 'all' or layer:head pairs such as 0:3,2:*")
    return tuple(dict.fromkeys(pairs))


def map_heads_of(options: AnalysisOptions, loaded: LoadedModel) -> tuple[tuple[int, int], ...]:
    """The heads whose class-mean maps the analysis keeps: ``options.map_heads`` (parsed when
    text), else ``default_map_heads``."""
    if isinstance(options.map_heads, str):
        return parse_heads(options.map_heads, loaded.n_layers, loaded.n_heads)
    return options.map_heads or tuple(default_map_heads(loaded.n_layers, loaded.n_heads))


def map_length_of(options: AnalysisOptions, source: InputSource) -> int:
    """Positions kept in the maps: ``options.map_length``, else the longest input when the
    source knows it up front, else its maximum input length; never more than that maximum."""
    return min(options.map_length or source.longest_hint() or source.max_length, source.max_length)


def open_source(
    loaded: LoadedModel,
    spec: InputSpec,
    options: AnalysisOptions,
    positions: range | None = None,
) -> InputSource:
    """The input source of ``spec`` for ``loaded`` (``positions``: one shard of it)."""
    common: dict[str, Any] = {
        "max_length": options.max_length,
        "max_inputs": options.max_inputs,
        "positions": positions,
    }
    if loaded.kmers is not None and options.global_measures and spec.kind != "text":
        common["spike_layouts"] = True  # DESIGN 3.5: place the tokens on the spike
    if spec.kind == "data":
        if spec.labels is not None:
            raise InputError("--labels is for --text and --fasta; a dataset has its own labels")
        return DatasetSource(loaded, spec.path, spec.split, **common)
    if spec.split is not None:
        raise InputError("--split is for --data")
    labels = read_input_labels(spec.labels) if spec.labels is not None else None
    source_class = TextSource if spec.kind == "text" else FastaSource
    return source_class(loaded, spec.path, labels=labels, **common)
