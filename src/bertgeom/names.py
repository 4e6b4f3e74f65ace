"""Names that capture, the measurements, the results store and the report share, defined once:
the measuring points of DESIGN 3.1, the tables and arrays of a results directory, the metric
names of ``heads.parquet`` and ``layers.parquet`` that are read by name outside the measure
that writes them (:class:`Metric`, with the gate and spike-domain families built by
:func:`gate_share`, :func:`gate_score_mean` and :func:`spike_domain`), the metric names of
``ablation.parquet`` (:class:`AblationMetric`), and the ids of the report's sections
(:class:`ReportSection`)."""

from __future__ import annotations

from enum import StrEnum

MEASURING_POINTS: tuple[str, ...] = (
    "layer_input",
    "head_output",
    "multihead_output",
    "layer_output",
)
"""The measuring points of DESIGN 3.1, in stream order."""

STREAM_POINTS: tuple[str, ...] = ("layer_input", "multihead_output", "layer_output")
"""The points of ``layers.parquet``: the measuring points but the per-head ``head_output``
(its rows are in ``heads.parquet``)."""

EMBEDDING_LAYER = -1
"""``layer`` of the embedding output (the input of layer 0) in ``layers.parquet``."""


class Table(StrEnum):
    """The tables of a results directory (``<name>.parquet``, ``docs/results.md``)."""

    HEADS = "heads"
    LAYERS = "layers"
    INPUTS = "inputs"
    PREDICTIONS = "predictions"
    HISTOGRAMS = "histograms"
    PCA = "pca"
    OUTLIER_DIMENSIONS = "outlier_dimensions"
    MUTATIONS = "mutations"
    ABLATION = "ablation"


class Array(StrEnum):
    """The arrays of a results directory (``arrays/<name>.npy``); the head overlaps are
    ``overlap_<kind>``."""

    CLASS_MEAN_MAPS = "class_mean_maps"
    SPIKE_ATTENTION_PROFILE = "spike_attention_profile"
    SINGULAR_VALUES = "singular_values"


class Metric(StrEnum):
    """The values of the ``metric`` column of ``heads.parquet`` and ``layers.parquet`` that are
    read by name outside the measure that writes them (the report, the benchmarks). What each
    means: ``docs/definitions.md`` and the pages it links; the measures build most names from a
    family prefix and a statistic, so this lists the names read, not every name written."""

    # Cone index (DESIGN 3.1, docs/global.md): layers.parquet, per point and class
    CONE_NORMALIZED_MEAN = "cone.normalized_mean"
    CONE_MEAN_COSINE = "cone.mean_cosine"
    # ... per head (heads.parquet)
    CONE_HEAD_OUTPUT_NORMALIZED_MEAN = "cone.head_output.normalized_mean"
    CONE_ATTENTION_ROWS_NORMALIZED_MEAN = "cone.attention_rows.normalized_mean"
    # ... of the [CLS] vectors of a class
    CLS_CONE_NORMALIZED = "cls.cone.normalized"

    # Separability of the classes in [CLS] (DESIGN 3.4, docs/global.md)
    CLS_SILHOUETTE = "cls.silhouette"
    CLS_FISHER_RATIO = "cls.fisher_ratio"
    CLS_PROBE_ACCURACY = "cls.probe_accuracy"
    CLS_N_POINTS = "cls.n_points"
    CLS_PCA_EXPLAINED_1 = "cls.pca.explained_1"
    CLS_PCA_EXPLAINED_2 = "cls.pca.explained_2"

    # Distribution of the stream (DESIGN 3.4, docs/global.md): layers.parquet
    DIST_VARIANCE = "dist.variance"
    DIST_SKEWNESS = "dist.skewness"
    DIST_EXCESS_KURTOSIS = "dist.excess_kurtosis"
    DIST_PARTICIPATION_RATIO = "dist.participation_ratio"
    DIST_OUTLIER_COUNT = "dist.outlier_count"
    # ... of each head's output (heads.parquet)
    DIST_HEAD_OUTPUT_PARTICIPATION_RATIO = "dist.head_output.participation_ratio"
    DIST_HEAD_OUTPUT_EXCESS_KURTOSIS = "dist.head_output.excess_kurtosis"

    # Gates (DESIGN 3.2, docs/gates.md); the others: gate_share, gate_score_mean
    GATE_MIXED_SHARE = "gate.mixed.share"

    # Subspaces from the weights (DESIGN 3.3, docs/subspace.md)
    SUBSPACE_SYMMETRY_SCORE = "subspace.symmetry_score"
    SUBSPACE_DIRECTIONALITY_SCORE = "subspace.directionality_score"
    SUBSPACE_ASYMMETRY = "subspace.asymmetry"
    SUBSPACE_QUERY_KEY_OVERLAP = "subspace.query_key_overlap"
    SUBSPACE_LAYER_OVERLAP_CHANCE = "subspace.layer.overlap_chance"

    # The spike (DESIGN 3.5, docs/spike.md); the domains: spike_domain
    SPIKE_MUTATIONS_ENRICHMENT = "spike.mutations.enrichment"
    SPIKE_CHANGES_ENRICHMENT = "spike.changes.enrichment"


DIST_PREFIX = "dist."
"""The prefix of every distribution metric (``dist.<statistic>``)."""
SPIKE_PREFIX = "spike."
"""The prefix of every spike metric (``spike.<...>``)."""
GATE_SHARE_PATTERN = r"^gate\.([a-z]+)\.share$"
"""Matches :func:`gate_share` names; the group is the gate (or ``mixed``)."""
SPIKE_DOMAIN_ENRICHMENT_PATTERN = r"^spike\.domain\.(.+)\.enrichment$"
"""Matches the ``spike_domain(slug, "enrichment")`` names; the group is the domain's slug."""


def gate_share(gate: str) -> str:
    """``gate.<gate>.share``: the share of inputs whose dominant gate is ``gate`` (a gate or
    ``mixed``), per head and class."""
    return f"gate.{gate}.share"


def gate_score_mean(gate: str) -> str:
    """``gate.<gate>.score_mean``: the mean over inputs of the score of ``gate``."""
    return f"gate.{gate}.score_mean"


def spike_domain(slug: str, statistic: str) -> str:
    """``spike.domain.<slug>.<statistic>``: a head's attention on one spike domain,
    ``statistic`` ``share`` or ``enrichment``."""
    return f"spike.domain.{slug}.{statistic}"


class AblationMetric(StrEnum):
    """The values of the ``metric`` column of ``ablation.parquet``, every one the ablation writes
    (``measures.ablation``, ``docs/ablation.md``): per ablation and class, ``inputs`` the inputs
    counted, ``accuracy`` the share of them called right, ``true_log_probability`` the mean
    ``log p(true class)``; ``macro_f1`` of class ``all`` only. Not the classifier's evaluation
    metrics (``metrics.json``), which share two of the names."""

    INPUTS = "inputs"
    ACCURACY = "accuracy"
    MACRO_F1 = "macro_f1"
    TRUE_LOG_PROBABILITY = "true_log_probability"


class ReportSection(StrEnum):
    """The ids of the report's sections (``<section id=...>``), in report order: the findings
    first, the folded metadata last. ``OVER_TRAINING`` is in the report of an over-training
    directory only (``analyze --over-training``), ``OVER_SEEDS`` in that of an over-seeds
    directory only (``analyze --over-seeds``); a results directory's report has the others."""

    FINDINGS = "findings"
    OVER_TRAINING = "over-training"
    OVER_SEEDS = "over-seeds"
    OVERVIEW = "overview"
    CLASSIFIER = "classifier"
    GATES = "gates"
    ATTENTION_MAPS = "attention-maps"
    SUBSPACE = "subspace"
    CONE = "cone"
    DISTRIBUTION = "distribution"
    SEPARABILITY = "separability"
    SPIKE = "spike"
    METADATA = "metadata"
