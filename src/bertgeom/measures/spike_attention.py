"""Which spike positions, domains and mutations each head attends to (DESIGN 3.5; formulas in
``docs/spike.md``): the mergeable accumulator and its tables.

:class:`SpikeAttentionAccumulator` sums the per-input values of ``spike_values`` (the token to
codon, domain and mutation mapping and the attention tokens receive) per (layer, class), so it
merges exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from torch import Tensor

from bertgeom.genomics.mutations import Mutation
from bertgeom.genomics.reference import SPIKE_CODONS
from bertgeom.genomics.token_map import SpikeLayout
from bertgeom.measures.base import ALL_CLASSES
from bertgeom.measures.grouping import FloatArray, class_groups, membership
from bertgeom.measures.spike_values import (
    DOMAINS,
    SpikeAttentionBatch,
    spike_attention_values,
)
from bertgeom.measures.tokens import TokenMask
from bertgeom.names import Metric, spike_domain


def _sums_shapes(n_layers: int, n_heads: int, n_mutations: int) -> dict[str, tuple[int, ...]]:
    domains = len(DOMAINS)
    return {
        "inputs": (n_layers,),
        "special": (n_layers, n_heads),
        "domain_inputs": (n_layers,),
        "domain_share": (n_layers, n_heads, domains),
        "domain_enrichment": (n_layers, n_heads, domains),
        "domain_enrichment_inputs": (n_layers, domains),
        "received": (n_layers, n_heads, n_mutations),
        "carrying": (n_layers, n_mutations),
        "background": (n_layers, n_heads, n_mutations),
        "background_inputs": (n_layers, n_mutations),
        "codon": (n_layers, n_heads, SPIKE_CODONS),
        "codon_inputs": (n_layers, SPIKE_CODONS),
        "change_sum": (n_layers, n_heads, SPIKE_CODONS),
        "change_count": (n_layers, SPIKE_CODONS),
        "plain_sum": (n_layers, n_heads, SPIKE_CODONS),
        "plain_count": (n_layers, SPIKE_CODONS),
    }


def _nan_to_zero(values: Tensor, defined: Tensor) -> Tensor:
    return torch.where(defined, values, torch.zeros((), dtype=values.dtype, device=values.device))


class SpikeAttentionAccumulator:
    """Streams the spike measures of DESIGN 3.5 per (layer, head, class).

    Every statistic is a mean over inputs, kept as a sum and a count per (layer, class):
    ``update`` adds a batch, ``merge`` adds two accumulators. ``defining`` maps a class to the
    names of its defining mutations (``token_map.defining_mutations``), all in ``mutations``
    (the layouts' mutation list).
    """

    def __init__(
        self,
        n_layers: int,
        n_heads: int,
        mutations: Sequence[Mutation],
        defining: Mapping[str, Sequence[Mutation]],
        classes: Sequence[str] = (),
    ) -> None:
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.mutations = tuple(mutations)
        index = {m.name: i for i, m in enumerate(self.mutations)}
        missing = {m.name for group in defining.values() for m in group} - set(index)
        if missing:
            raise ValueError(f"defining mutations {sorted(missing)} are not in the mutation list")
        self.defining = {c: tuple(index[m.name] for m in group) for c, group in defining.items()}
        self.classes = list(classes)
        self.sums_: dict[str, dict[str, FloatArray]] = {}

    def _class_sums(self, label: str) -> dict[str, FloatArray]:
        if label not in self.sums_:
            shapes = _sums_shapes(self.n_layers, self.n_heads, len(self.mutations))
            self.sums_[label] = {name: np.zeros(shape) for name, shape in shapes.items()}
        return self.sums_[label]

    def update(
        self,
        layer: int,
        attention: Tensor,
        tokens: TokenMask | None,
        layout: SpikeLayout,
        labels: Sequence[str] | None = None,
    ) -> None:
        """Add ``attention (batch, head, query, key)`` of ``layer`` for a batch placed by
        ``layout``."""
        if layout.mutations != self.mutations:
            raise ValueError("the layout's mutations differ from the accumulator's")
        values = spike_attention_values(
            attention,
            tokens,
            layout.span_lo,
            layout.span_hi,
            self.mutations,
            layout.changed,
        )
        device = attention.device
        carries = layout.carries.to(device)
        observed = layout.observed.to(device)
        per_input = self._per_input_sums(values, carries, observed)
        groups, membership = _membership(labels, attention.shape[0], device)
        targets = [self._class_sums(label) for label in groups]
        for name, value in per_input.items():
            summed = (membership @ value.reshape(value.shape[0], -1)).cpu().numpy()
            for target, row in zip(targets, summed, strict=True):
                target[name][layer] += row.reshape(target[name].shape[1:])

    @staticmethod
    def _per_input_sums(
        values: SpikeAttentionBatch, carries: Tensor, observed: Tensor
    ) -> dict[str, Tensor]:
        """Each summed quantity per input ``(batch, ...)``, zero where it is undefined."""
        has_tokens = values.placed > 0
        domain_defined = has_tokens[:, None] & (values.domain_tokens > 0)
        enrichment = values.domain_share / values.domain_tokens[:, None, :]
        covered = values.mutation_tokens > 0
        carrying = covered & carries
        background = covered & observed & ~carries
        codon_covered = values.codon_tokens > 0
        ones = torch.ones_like(values.placed)
        return {
            "inputs": ones,
            "special": values.special_share,
            "domain_inputs": has_tokens.double(),
            "domain_share": _nan_to_zero(values.domain_share, has_tokens[:, None, None]),
            "domain_enrichment": _nan_to_zero(enrichment, domain_defined[:, None, :]),
            "domain_enrichment_inputs": domain_defined.double(),
            "received": _nan_to_zero(values.mutation_mean, carrying[:, None, :]),
            "carrying": carrying.double(),
            "background": _nan_to_zero(values.mutation_mean, background[:, None, :]),
            "background_inputs": background.double(),
            "codon": _nan_to_zero(values.codon_mean, codon_covered[:, None, :]),
            "codon_inputs": codon_covered.double(),
            "change_sum": values.change_sum,
            "change_count": values.change_count,
            "plain_sum": values.plain_sum,
            "plain_count": values.plain_count,
        }

    def merge(self, other: SpikeAttentionAccumulator) -> SpikeAttentionAccumulator:
        """A new accumulator with both inputs."""
        if (self.n_layers, self.n_heads, self.mutations, self.defining) != (
            other.n_layers,
            other.n_heads,
            other.mutations,
            other.defining,
        ):
            raise ValueError("cannot merge SpikeAttentionAccumulators with different parameters")
        merged = SpikeAttentionAccumulator.__new__(SpikeAttentionAccumulator)
        merged.__dict__.update(self.__dict__)
        merged.classes = list(dict.fromkeys([*self.classes, *other.classes]))
        merged.sums_ = {}
        for source in (self.sums_, other.sums_):
            for label, sums in source.items():
                target = merged._class_sums(label)
                for name, value in sums.items():
                    target[name] += value
        return merged

    def class_names(self) -> list[str]:
        """``all``, the declared classes, then any other class seen, in that order."""
        seen = [c for c in self.sums_ if c != ALL_CLASSES and c not in self.classes]
        return [ALL_CLASSES, *self.classes, *seen]

    def result(self) -> pd.DataFrame:
        """Long table ``layer, head, class, metric, value``: ``spike.domain.<d>.share``,
        ``spike.domain.<d>.enrichment``, ``spike.special.share``, ``spike.n_inputs`` and
        ``spike.mutations.received``, ``.background``, ``.enrichment``, ``.n``."""
        frames: list[pd.DataFrame] = []
        table = self.mutation_table()
        for label in self.class_names():
            sums = self.sums_.get(label)
            if sums is None:
                continue
            metrics = {
                **self._domain_metrics(sums),
                **self._mutation_summary(table, label),
                **self._change_metrics(sums),
            }
            frames.extend(_head_rows(label, name, value) for name, value in metrics.items())
        frame = pd.concat(frames, ignore_index=True) if frames else _head_rows("", "", None)
        return frame.sort_values(["layer", "head", "class", "metric"], kind="stable").reset_index(
            drop=True
        )

    def _domain_metrics(self, sums: dict[str, FloatArray]) -> dict[str, FloatArray]:
        """Means over inputs of the special and domain shares and enrichments of one class."""
        with np.errstate(divide="ignore", invalid="ignore"):
            metrics: dict[str, FloatArray] = {
                "spike.special.share": sums["special"] / sums["inputs"][:, None],
                "spike.n_inputs": np.repeat(sums["domain_inputs"][:, None], self.n_heads, 1),
            }
            share = sums["domain_share"] / sums["domain_inputs"][:, None, None]
            enrichment = sums["domain_enrichment"] / sums["domain_enrichment_inputs"][:, None, :]
        for d, slug in enumerate(DOMAINS):
            metrics[spike_domain(slug, "share")] = share[..., d]
            metrics[spike_domain(slug, "enrichment")] = enrichment[..., d]
        return metrics

    def _change_metrics(self, sums: dict[str, FloatArray]) -> dict[str, FloatArray]:
        """The control for the mutation enrichment: attention received by the tokens that
        differ from the reference away from every listed mutation, over the unchanged tokens
        centred on the same codon in all inputs, ``mean_t r_t / background(codon_t)``."""
        every = self.sums_[ALL_CLASSES]
        with np.errstate(divide="ignore", invalid="ignore"):
            background = every["plain_sum"] / every["plain_count"][:, None, :]
            usable = np.isfinite(background) & (background > 0)
            ratios = np.where(usable, sums["change_sum"] / np.where(usable, background, 1), 0)
            tokens = np.where(usable, sums["change_count"][:, None, :], 0).sum(-1)
            enrichment = ratios.sum(-1) / tokens
        return {Metric.SPIKE_CHANGES_ENRICHMENT.value: enrichment, "spike.changes.n_tokens": tokens}

    def _mutation_summary(self, table: pd.DataFrame, label: str) -> dict[str, FloatArray]:
        """Means over the class's usable mutations (both counts > 0), or over every class's
        usable (class, mutation) pairs for ``all``."""
        used = table[(table["n_carrying"] > 0) & (table["n_background"] > 0)]
        if label != ALL_CLASSES:
            used = used[used["class"] == label]
        shape = (self.n_layers, self.n_heads)
        grouped = used.groupby(["layer", "head"])
        summary: dict[str, FloatArray] = {}
        for column in ("received", "background", "enrichment"):
            means = grouped[column].mean()
            summary[f"spike.mutations.{column}"] = _grid(means, shape, math.nan)
        summary["spike.mutations.n"] = _grid(grouped["enrichment"].size(), shape, 0.0)
        return summary

    def mutation_table(self) -> pd.DataFrame:
        """One row per (layer, head, class, defining mutation of the class): ``received`` (mean
        over the class's carriers of the mean r at the mutation), ``background`` (the same over
        every input that covers and observes it without carrying it), ``enrichment`` =
        received / background, ``n_carrying``, ``n_background``."""
        columns = ["layer", "head", "class", "mutation", "start"]
        columns += ["received", "background", "enrichment", "n_carrying", "n_background"]
        everything = self.sums_.get(ALL_CLASSES)
        rows = []
        for label in self.class_names()[1:]:
            sums, indices = self.sums_.get(label), self.defining.get(label, ())
            if sums is None or everything is None or not indices:
                continue
            picked = list(indices)
            carrying = sums["carrying"][:, picked]
            background_inputs = everything["background_inputs"][:, picked]
            with np.errstate(divide="ignore", invalid="ignore"):
                received = sums["received"][..., picked] / carrying[:, None, :]
                background = everything["background"][..., picked] / background_inputs[:, None, :]
            layer, head, m = np.meshgrid(
                np.arange(self.n_layers), np.arange(self.n_heads), picked, indexing="ij"
            )
            rows.append(
                pd.DataFrame(
                    {
                        "layer": layer.ravel(),
                        "head": head.ravel(),
                        "class": label,
                        "mutation": [self.mutations[i].name for i in m.ravel()],
                        "start": [self.mutations[i].start for i in m.ravel()],
                        "received": received.ravel(),
                        "background": background.ravel(),
                        "enrichment": (received / background).ravel(),
                        "n_carrying": np.broadcast_to(carrying[:, None, :], m.shape).ravel(),
                        "n_background": np.broadcast_to(
                            background_inputs[:, None, :], m.shape
                        ).ravel(),
                    }
                )
            )
        if not rows:
            return pd.DataFrame({name: [] for name in columns})
        table = pd.concat(rows, ignore_index=True)
        table[["n_carrying", "n_background"]] = table[["n_carrying", "n_background"]].astype(
            np.int64
        )
        order = ["layer", "head", "class", "start", "mutation"]
        return table.sort_values(order, kind="stable").reset_index(drop=True)

    def codon_profile(self) -> tuple[list[str], npt.NDArray[np.float32]]:
        """Classes and ``(class, layer, head, codon)`` float32: mean over the inputs covering
        each codon 1..1273 of the mean r of the tokens covering it (NaN where none does)."""
        names = [c for c in self.class_names() if c in self.sums_]
        profile = np.full(
            (len(names), self.n_layers, self.n_heads, SPIKE_CODONS), math.nan, dtype=np.float32
        )
        for index, label in enumerate(names):
            sums = self.sums_[label]
            with np.errstate(divide="ignore", invalid="ignore"):
                profile[index] = sums["codon"] / sums["codon_inputs"][:, None, :]
        return names, profile


def _membership(
    labels: Sequence[str] | None, batch: int, device: torch.device
) -> tuple[list[str], Tensor]:
    """Groups ``all`` and each class present, and a ``(group, batch)`` float64 0/1 matrix."""
    groups = list(class_groups(labels, batch))
    return [label for label, _ in groups], membership(groups, batch, device)


def _grid(values: pd.Series, shape: tuple[int, int], fill: float) -> FloatArray:
    grid = np.full(shape, fill)
    layers = values.index.get_level_values(0).to_numpy(np.int64)
    heads = values.index.get_level_values(1).to_numpy(np.int64)
    grid[layers, heads] = values.to_numpy(np.float64)
    return grid


def _head_rows(label: str, metric: str, values: FloatArray | None) -> pd.DataFrame:
    """Rows ``layer, head, class, metric, value`` of a ``(layer, head)`` grid."""
    if values is None:
        return pd.DataFrame({c: [] for c in ("layer", "head", "class", "metric", "value")})
    layers, heads = np.indices(values.shape)
    return pd.DataFrame(
        {
            "layer": layers.ravel().astype(np.int64),
            "head": heads.ravel().astype(np.int64),
            "class": label,
            "metric": metric,
            "value": values.ravel().astype(np.float64),
        }
    )
