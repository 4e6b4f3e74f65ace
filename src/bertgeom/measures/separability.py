"""How separable the classes are in the ``[CLS]`` vectors of each layer (DESIGN 3.4).

Silhouette, Fisher discriminant ratio and the held-out accuracy of a linear probe need all the
points of a layer at once, so ``ClsSeparabilityAccumulator`` keeps the ``[CLS]`` vectors: memory
O(points x d) per layer, bounded by ``max_points`` through a uniform reservoir sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from torch import Tensor

from bertgeom.measures.base import ALL_CLASSES

FloatArray = npt.NDArray[np.float64]
Labels = npt.NDArray[np.str_]


def _points(vectors: Tensor | FloatArray) -> FloatArray:
    if isinstance(vectors, Tensor):  # a copy: a view would keep the whole batch's tensor alive
        return np.array(vectors.detach().to(torch.float64).cpu().numpy(), copy=True)
    return np.asarray(vectors, dtype=np.float64)


def silhouette(
    vectors: Tensor | FloatArray, labels: Sequence[str], metric: str = "euclidean"
) -> float:
    """Mean silhouette (b - a) / max(a, b) of the points ``vectors (n, d)``
    (``sklearn.metrics.silhouette_score``); NaN unless 2 <= classes <= n - 1."""
    label_array = np.asarray(labels)
    n_classes = len(set(label_array.tolist()))
    if not 2 <= n_classes <= len(label_array) - 1:
        return math.nan
    from sklearn.metrics import silhouette_score  # sklearn: a second to import, used once

    return float(silhouette_score(_points(vectors), label_array, metric=metric))


def scatter_matrices(
    vectors: Tensor | FloatArray, labels: Sequence[str]
) -> tuple[FloatArray, FloatArray]:
    """Within- and between-class scatter ``(d, d)``, normalised by the number of points N:
    S_W = (1/N) sum_c sum_{i in c} (x_i - mu_c)(x_i - mu_c)^T,
    S_B = sum_c (N_c / N) (mu_c - mu)(mu_c - mu)^T (so S_W + S_B is the total covariance)."""
    x = _points(vectors)
    label_array = np.asarray(labels)
    mean = x.mean(0)
    within = np.zeros((x.shape[1], x.shape[1]))
    between = np.zeros_like(within)
    for label in np.unique(label_array):
        members = x[label_array == label]
        centred = members - members.mean(0)
        within += centred.T @ centred
        offset = members.mean(0) - mean
        between += len(members) * np.outer(offset, offset)
    return within / len(x), between / len(x)


def fisher_ratio(vectors: Tensor | FloatArray, labels: Sequence[str], ridge: float = 1e-3) -> float:
    """Fisher discriminant ratio J = trace(S_W^-1 S_B) (the sum of the LDA eigenvalues), with
    S_W regularised to S_W + ridge * (trace(S_W) / d) I, as S_W is singular whenever d >= N.
    NaN for fewer than two classes."""
    if len(set(labels)) < 2:
        return math.nan
    within, between = scatter_matrices(vectors, labels)
    d = within.shape[0]
    scale = np.trace(within) / d
    regularised = within + ridge * (scale if scale > 0 else 1.0) * np.eye(d)
    return float(np.trace(np.linalg.solve(regularised, between)))


def linear_probe_accuracy(
    vectors: Tensor | FloatArray,
    labels: Sequence[str],
    n_splits: int = 5,
    seed: int = 0,
    max_iter: int = 2000,
) -> float:
    """Mean held-out accuracy of a linear probe (standardisation + multinomial
    ``LogisticRegression``) under seeded, shuffled stratified k-fold cross-validation.

    ``n_splits`` drops to the size of the smallest class; NaN when a class has fewer than two
    points or there is only one class.
    """
    label_array = np.asarray(labels)
    _, counts = np.unique(label_array, return_counts=True)
    if len(counts) < 2 or counts.min() < 2:
        return math.nan
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folds = StratifiedKFold(
        n_splits=min(n_splits, int(counts.min())), shuffle=True, random_state=seed
    )
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    scores = cross_val_score(probe, _points(vectors), label_array, cv=folds, scoring="accuracy")
    return float(np.mean(scores))


def pca_2d(vectors: Tensor | FloatArray) -> tuple[FloatArray, FloatArray]:
    """Projection of ``vectors (n, d)`` on their first two principal axes, ``(n, 2)``, and the
    explained variance ratios ``(2,)`` (sklearn PCA, deterministic signs); zeros when all the
    points are equal."""
    x = _points(vectors)
    components = min(2, x.shape[0], x.shape[1])
    if not np.ptp(x, axis=0).any():  # all points equal (e.g. [CLS] at the embedding output)
        return np.zeros((x.shape[0], 2)), np.zeros(2)
    from sklearn.decomposition import PCA

    pca = PCA(n_components=components, svd_solver="full").fit(x)
    coords = np.zeros((x.shape[0], 2))
    ratios = np.zeros(2)
    coords[:, :components] = pca.transform(x)
    ratios[:components] = pca.explained_variance_ratio_
    return coords, ratios


def _canonical_order(points: FloatArray, labels: Labels) -> npt.NDArray[np.intp]:
    """An order of the points that does not depend on their arrival order (by label, then
    coordinates), so that the seeded cross-validation folds are the same after any merge."""
    keys = [points[:, j] for j in range(points.shape[1] - 1, -1, -1)]
    return np.lexsort([*keys, labels])


@dataclass
class _Reservoir:
    """A uniform sample of at most ``capacity`` of the ``seen`` points offered."""

    points: list[FloatArray] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    seen: int = 0


class ClsSeparabilityAccumulator:
    """Class separability of the ``[CLS]`` vectors per layer.

    ``result()`` columns ``layer, class, metric, value`` (class ``"all"``); metrics
    ``cls.silhouette``, ``cls.fisher_ratio``, ``cls.probe_accuracy``, ``cls.n_points``,
    ``cls.n_classes``; ``pca()`` gives the 2-D projections for plots. With ``max_points`` set,
    each layer keeps a uniform reservoir sample of that many points (merges stay uniform: the
    number taken from each side is hypergeometric), else every point.
    """

    def __init__(
        self,
        max_points: int | None = 4000,
        seed: int = 0,
        n_splits: int = 5,
        ridge: float = 1e-3,
    ) -> None:
        self.max_points = max_points
        self.seed = seed
        self.n_splits = n_splits
        self.ridge = ridge
        self.reservoirs_: dict[int, _Reservoir] = {}
        self._rng = np.random.default_rng(seed)

    def update(self, layer: int, cls_vectors: Tensor, labels: Sequence[str]) -> None:
        """Add ``cls_vectors (batch, d)`` of ``layer`` with their class labels."""
        points = _points(cls_vectors)
        if len(labels) != points.shape[0]:
            raise ValueError(f"{len(labels)} labels for {points.shape[0]} [CLS] vectors")
        reservoir = self.reservoirs_.setdefault(layer, _Reservoir())
        for point, label in zip(points, labels, strict=True):
            reservoir.seen += 1
            if self.max_points is None or len(reservoir.points) < self.max_points:
                reservoir.points.append(point)
                reservoir.labels.append(str(label))
                continue
            slot = int(self._rng.integers(0, reservoir.seen))
            if slot < self.max_points:
                reservoir.points[slot] = point
                reservoir.labels[slot] = str(label)

    def merge(self, other: ClsSeparabilityAccumulator) -> ClsSeparabilityAccumulator:
        """A new accumulator with both inputs."""
        params = (self.max_points, self.seed, self.n_splits, self.ridge)
        if params != (other.max_points, other.seed, other.n_splits, other.ridge):
            raise ValueError(
                "cannot merge ClsSeparabilityAccumulators built with different parameters"
            )
        out = ClsSeparabilityAccumulator(*params)
        for layer in sorted(set(self.reservoirs_) | set(other.reservoirs_)):
            a = self.reservoirs_.get(layer, _Reservoir())
            b = other.reservoirs_.get(layer, _Reservoir())
            total = len(a.points) + len(b.points)
            keep = total if self.max_points is None else min(self.max_points, total)
            from_a = len(a.points)
            if keep < total:
                from_a = int(out._rng.hypergeometric(a.seen, b.seen, keep))
            pick_a = np.sort(out._rng.choice(len(a.points), size=from_a, replace=False))
            pick_b = np.sort(out._rng.choice(len(b.points), size=keep - from_a, replace=False))
            out.reservoirs_[layer] = _Reservoir(
                [a.points[i] for i in pick_a] + [b.points[i] for i in pick_b],
                [a.labels[i] for i in pick_a] + [b.labels[i] for i in pick_b],
                a.seen + b.seen,
            )
        return out

    def points(self, layer: int) -> tuple[FloatArray, Labels]:
        """The kept ``[CLS]`` vectors ``(n, d)`` of ``layer`` and their labels, canonical order."""
        reservoir = self.reservoirs_[layer]
        points = np.stack(reservoir.points)
        labels = np.asarray(reservoir.labels)
        order = _canonical_order(points, labels)
        return points[order], labels[order]

    def result(self) -> pd.DataFrame:
        """Long table: ``layer, class, metric, value``."""
        rows: list[tuple[object, ...]] = []
        for layer in sorted(self.reservoirs_):
            points, labels = self.points(layer)
            label_list = labels.tolist()
            values = {
                "silhouette": silhouette(points, label_list),
                "fisher_ratio": fisher_ratio(points, label_list, self.ridge),
                "probe_accuracy": linear_probe_accuracy(
                    points, label_list, self.n_splits, self.seed
                ),
                "n_points": float(len(points)),
                "n_classes": float(len(set(label_list))),
            }
            rows.extend(
                (layer, ALL_CLASSES, f"cls.{name}", value) for name, value in values.items()
            )
        frame = pd.DataFrame(rows, columns=["layer", "class", "metric", "value"])
        frame["value"] = frame["value"].astype(np.float64)
        return frame

    def pca(self) -> dict[int, tuple[FloatArray, Labels, FloatArray]]:
        """Per layer: the 2-D PCA coordinates ``(n, 2)``, labels ``(n,)`` and explained variance
        ratios ``(2,)``."""
        out = {}
        for layer in sorted(self.reservoirs_):
            points, labels = self.points(layer)
            coords, ratios = pca_2d(points)
            out[layer] = (coords, labels, ratios)
        return out
