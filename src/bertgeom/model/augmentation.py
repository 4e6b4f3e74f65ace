"""What the training loop feeds the model besides the spikes themselves: the soft targets of
the classes and the outliers, and the two augmentations (hidden k-mers, partial-spike windows)."""

from __future__ import annotations

import torch

from bertgeom.genomics.synthetic import OUTLIER


def soft_targets(labels: list[str], classes: tuple[str, ...]) -> torch.Tensor:
    """``(n, n_classes)`` targets: one-hot for a class, uniform for :data:`OUTLIER`."""
    index = {label: position for position, label in enumerate(classes)}
    targets = torch.zeros(len(labels), len(classes))
    for row, label in enumerate(labels):
        if label == OUTLIER:
            targets[row] = 1.0 / len(classes)
        elif label in index:
            targets[row, index[label]] = 1.0
        else:
            raise ValueError(f"label {label!r} is neither a class nor {OUTLIER!r}")
    return targets


def mask_tokens(
    input_ids: torch.Tensor,
    probability: float,
    mask_id: int,
    special_ids: list[int],
    generator: torch.Generator,
) -> torch.Tensor:
    """Replace each content token by ``mask_id`` with ``probability`` (augmentation).

    Hiding random k-mers during training makes the model read several markers of a class instead
    of one: a real Alpha spike without the 69-70 and 144 deletions was called pre-VOC by a model
    trained without it. Training hides them with ``[UNK]``, what a k-mer the vocabulary never
    saw (a private change, a new tail) reads as in use, where ``[MASK]`` never occurs: models
    that hid with ``[MASK]`` called held-out 20C spikes Alpha (0.99) and Beta for one isolated
    ``[UNK]`` at their last token.
    """
    if probability <= 0:
        return input_ids
    draws = torch.rand(input_ids.shape, generator=generator)
    content = ~torch.isin(input_ids, torch.tensor(special_ids))
    masked = torch.full_like(input_ids, mask_id)
    return torch.where((draws < probability) & content, masked, input_ids)


def window_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    probability: float,
    fraction: tuple[float, float],
    unknown_id: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Keep, in each row with ``probability``, one window of ``U(fraction)`` of its content
    tokens at their positions and make the others ``unknown_id`` (augmentation).

    This is what a partial spike looks like to the model: :func:`bertgeom.genomics.spike.
    extract_spike` fills the uncovered ends with ``N``, so the covered k-mers keep the token
    index they have in a complete spike, and every k-mer with an ``n`` is ``[UNK]``. Rows are
    ``[CLS] content [SEP] [PAD]...``; the special tokens are kept.
    """
    if probability <= 0:
        return input_ids
    rows, width = input_ids.shape
    content = attention_mask.sum(dim=1) - 2
    low, high = fraction
    share = low + (high - low) * torch.rand(rows, generator=generator)
    kept = torch.clamp(torch.ceil(share * content), min=1)
    start = torch.floor(torch.rand(rows, generator=generator) * (content - kept + 1))
    chosen = torch.rand(rows, generator=generator) < probability
    index = torch.arange(width)[None, :] - 1  # content index of each position
    inside_content = (index >= 0) & (index < content[:, None])
    inside_window = (index >= start[:, None]) & (index < (start + kept)[:, None])
    hidden = chosen[:, None] & inside_content & ~inside_window
    return torch.where(hidden, torch.full_like(input_ids, unknown_id), input_ids)
