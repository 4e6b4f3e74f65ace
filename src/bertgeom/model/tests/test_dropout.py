"""FastDropout: the rate, the scale and independence of its draws, its gradient, and that the
swap leaves a BERT's weights and evaluation outputs alone."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from bertgeom.model.dropout import FastDropout, with_fast_dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_drops_at_its_rate_independently_and_keeps_the_mean(p: float) -> None:
    torch.manual_seed(0)
    dropout = FastDropout(p).train()
    x = torch.ones(1000, 1001)  # an odd count: the last 64-bit word is only partly used
    out = dropout(x)
    kept = out != 0
    n = kept.numel()
    tolerance = 5 * (p * (1 - p) / n) ** 0.5
    assert abs(1 - kept.float().mean().item() - p) < tolerance
    assert torch.allclose(out[kept], torch.tensor(1 / (1 - dropout.p)))
    assert abs(out.mean().item() - 1.0) < 5 * (p / (1 - p) / n) ** 0.5
    # Neighbours share a 64-bit word: both kept at the rate of independent draws.
    pairs = (kept[:, :-1] & kept[:, 1:]).float().mean().item()
    assert abs(pairs - (1 - p) ** 2) < 5 * ((1 - p) ** 2 * (1 - (1 - p) ** 2) / n) ** 0.5


def test_the_gradient_is_the_kept_mask_scaled() -> None:
    torch.manual_seed(1)
    x = torch.randn(7, 33, requires_grad=True)
    out = FastDropout(0.25).train()(x)
    out.sum().backward()
    assert x.grad is not None
    expected = (out != 0).float() / 0.75
    assert torch.equal(x.grad, expected)


def test_identity_in_evaluation_and_at_rate_zero() -> None:
    x = torch.randn(4, 5)
    assert FastDropout(0.3).eval()(x) is x
    assert FastDropout(0.0).train()(x) is x
    assert FastDropout(0.1).p == round(0.1 * 2**16) / 2**16
    with pytest.raises(ValueError):
        FastDropout(1.0)


def test_swapping_a_bert_keeps_its_weights_and_evaluation() -> None:
    config = BertConfig(
        vocab_size=30,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
    )
    torch.manual_seed(2)
    model = BertForSequenceClassification(config).eval()
    ids = torch.randint(0, 30, (3, 9))
    before = model(input_ids=ids).logits
    keys = set(model.state_dict())
    swapped = with_fast_dropout(model)
    assert swapped is model and set(model.state_dict()) == keys
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    assert (
        sum(isinstance(m, FastDropout) for m in model.modules()) == 3 * 2 + 2
    )  # three a layer, the embeddings' and the head's
    assert torch.equal(model(input_ids=ids).logits, before)
