"""The presets: shapes BERT accepts, and the deeper preset of the case study over seeds."""

from __future__ import annotations

import pytest
from transformers import BertConfig

from bertgeom.model.presets import PRESETS


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_a_valid_bert_shape(name: str) -> None:
    preset = PRESETS[name]
    assert preset.hidden_size % preset.num_attention_heads == 0
    config = BertConfig()
    config.update(preset.architecture())
    assert config.num_hidden_layers == preset.num_hidden_layers
    assert preset.epochs >= 1 and preset.batch_size >= 1 and preset.learning_rate > 0


def test_deep_is_deeper_and_has_more_heads_than_small() -> None:
    deep, small = PRESETS["deep"], PRESETS["small"]
    assert deep.num_hidden_layers >= 4 and deep.num_attention_heads >= 8
    assert deep.num_hidden_layers > small.num_hidden_layers
    assert deep.num_attention_heads > small.num_attention_heads
