"""Models of one recipe trained under several seeds: ``bertgeom train --seeds 0,1,2``.

The directory holds one complete model directory per seed and a record of them::

    DIR/
      seeds.json    the seeds, the recipe's options and each model's training summary
      seed-0/       the model trained with seed 0 (as 'bertgeom train --seed 0' writes it)
      seed-1/ ...

``analyze --over-seeds`` analyses every model of it (``bertgeom.pipeline.over_seeds``). This
module names the directories, reads the seeds of the command line and lists the models; the
training itself is ``bertgeom.pipeline.seeds``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bertgeom.errors import InputError

SEEDS_MANIFEST = "seeds.json"
"""The record of the seeds and their models, in the directory of ``train --seeds``."""
SEED_MAX = 2**32 - 1
"""The largest seed, as in every command (what numpy's generators take)."""


def seed_directory(seed: int) -> str:
    """The name of the directory of the model (or results) of ``seed``: ``seed-N``."""
    return f"seed-{seed}"


def parse_seeds(text: str, option: str = "--seeds") -> tuple[int, ...]:
    """The seeds of a comma-separated list (``0,1,2``), in the order given; anything but
    distinct whole numbers from 0 to :data:`SEED_MAX` is an :class:`InputError` in one line."""
    terms = [term.strip() for term in text.split(",")]
    if not any(terms):
        raise InputError(f"{option}: no seeds given; give comma-separated seeds, e.g. 0,1,2")
    seeds: list[int] = []
    for term in terms:
        if not term.isdecimal() or not term.isascii():
            raise InputError(
                f"{option}: {term!r} is not a seed; give comma-separated whole numbers from 0 "
                f"to {SEED_MAX}, e.g. 0,1,2"
            )
        seed = int(term)
        if seed > SEED_MAX:
            raise InputError(f"{option}: {seed} is above the largest seed, {SEED_MAX}")
        if seed in seeds:
            raise InputError(f"{option}: seed {seed} is given twice; give each seed once")
        seeds.append(seed)
    return tuple(seeds)


@dataclass(frozen=True)
class SeedModel:
    """One model of a directory of ``train --seeds``: its seed and its model directory."""

    seed: int
    directory: Path


def list_seed_models(directory: Path, option: str = "--over-seeds") -> list[SeedModel]:
    """The models of a directory written by ``train --seeds``, in the order of its
    ``seeds.json``; an :class:`InputError` in one line when it is not such a directory or
    a model it lists is missing."""
    directory = Path(directory)
    manifest = directory / SEEDS_MANIFEST
    if not manifest.is_file():
        raise InputError(
            f"{option}: {directory} has no {SEEDS_MANIFEST}; train the models with "
            "'bertgeom train --seeds 0,1,2 --out DIR'"
        )
    try:
        record = json.loads(manifest.read_text())
        seeds = [int(seed) for seed in record["seeds"]]
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"{option}: {manifest} cannot be read ({error})") from None
    models = []
    for seed in seeds:
        model = directory / seed_directory(seed)
        if not (model / "config.json").is_file():
            raise InputError(f"{option}: {model} is listed in {manifest} but holds no model")
        models.append(SeedModel(seed, model))
    if not models:
        raise InputError(f"{option}: {manifest} lists no seeds")
    return models
