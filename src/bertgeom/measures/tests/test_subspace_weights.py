"""Tests of the weight-based subspace measures (DESIGN 3.3) against independent computations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.linalg import subspace_angles

from bertgeom.measures.bilinear_forms import (
    asymmetry,
    attention_scores,
    bilinear_forms,
    directionality_score,
    effective_rank,
    eigen_signature,
    head_singular_values,
    split_heads,
    split_output_heads,
    symmetric_part_eigenvalues,
    symmetry_score,
)
from bertgeom.measures.subspace_weights import (
    AttentionWeights,
    orthonormal_basis,
    principal_angles,
    subspace_overlap,
    weight_subspace_measures,
)

D, HEADS = 12, 3
DK = D // HEADS


def random_weights(seed: int) -> AttentionWeights:
    g = torch.Generator().manual_seed(seed)
    w = [torch.randn(D, D, generator=g, dtype=torch.float64) for _ in range(4)]
    return AttentionWeights(w[0], w[1], w[2], w[3], HEADS)


def test_bilinear_forms_match_explicit_per_head_loop() -> None:
    weights = random_weights(0)
    forms = bilinear_forms(weights.weight_q, weights.weight_k, HEADS)
    for h in range(HEADS):
        rows = slice(h * DK, (h + 1) * DK)
        expected = weights.weight_q[rows, :].T @ weights.weight_k[rows, :]
        torch.testing.assert_close(forms[h], expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(forms.sum(0), weights.weight_q.T @ weights.weight_k)


def test_output_blocks_are_columns() -> None:
    weights = random_weights(1)
    blocks = split_output_heads(weights.weight_o, HEADS)
    z = torch.randn(HEADS, DK, dtype=torch.float64)
    for h in range(HEADS):
        torch.testing.assert_close(blocks[h], weights.weight_o[:, h * DK : (h + 1) * DK])
    torch.testing.assert_close(
        weights.weight_o @ z.reshape(-1), torch.einsum("hdk,hk->d", blocks, z)
    )
    torch.testing.assert_close(
        split_heads(weights.weight_q, HEADS)[1], weights.weight_q[DK : 2 * DK]
    )


def test_symmetric_and_skew_constructions() -> None:
    w = torch.randn(DK, D, dtype=torch.float64)
    symmetric = w.T @ w
    assert asymmetry(symmetric) == pytest.approx(0.0, abs=1e-12)
    assert symmetry_score(symmetric) == pytest.approx(1.0)
    assert directionality_score(symmetric) == 0.0
    e = torch.eye(D, dtype=torch.float64)
    w_q = torch.stack([e[0], e[1]])
    w_k = torch.stack([e[1], -e[0]])
    skew = bilinear_forms(w_q, w_k, 1)[0]
    assert symmetry_score(skew) == pytest.approx(-1.0)
    assert asymmetry(skew) == pytest.approx(2.0)


def test_symmetry_score_against_decomposition_and_asymmetry_relation() -> None:
    m = torch.randn(9, 9, dtype=torch.float64)
    sym, skew = (m + m.T) / 2, (m - m.T) / 2
    expected = float((sym.square().sum() - skew.square().sum()) / m.square().sum())
    assert symmetry_score(m) == pytest.approx(expected, rel=1e-12)
    assert asymmetry(m) == pytest.approx(math.sqrt(2 * (1 - symmetry_score(m))), rel=1e-12)


def authors_directionality(a: np.ndarray, num_std: float = 2.0) -> float:
    """The released code of Saponati et al. (utils/scores.py), re-written in numpy; their figures
    plot -1 times this value."""
    row, col = np.linalg.norm(a, axis=1), np.linalg.norm(a, axis=0)
    row_t = row.mean() + num_std * row.std(ddof=1)
    col_t = col.mean() + num_std * col.std(ddof=1)
    row_excess = (row[row > row_t] - row_t).sum()
    col_excess = (col[col > col_t] - col_t).sum()
    if row_excess + col_excess == 0:
        return 0.0
    return float((col_excess - row_excess) / (col_excess + row_excess))


def test_directionality_on_planted_matrices() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(size=(40, 40))
    column_dominant = base.copy()
    column_dominant[:, 5] *= 12.0
    m = torch.from_numpy(column_dominant)
    assert directionality_score(m) < -0.5
    assert directionality_score(m.T) == pytest.approx(-directionality_score(m))
    assert directionality_score(m) == pytest.approx(-authors_directionality(column_dominant))
    assert directionality_score(torch.from_numpy(base)) == pytest.approx(
        -authors_directionality(base)
    )
    assert directionality_score(m, mode="norm") < 0.0
    with pytest.raises(ValueError):
        directionality_score(m, mode="bogus")


def test_singular_values_via_qr_match_dense() -> None:
    weights = random_weights(4)
    fast = head_singular_values(weights.weight_q, weights.weight_k, HEADS)
    dense = torch.linalg.svdvals(bilinear_forms(weights.weight_q, weights.weight_k, HEADS))
    torch.testing.assert_close(fast, dense[:, :DK], rtol=1e-10, atol=1e-10)
    assert float(dense[:, DK:].abs().max()) < 1e-10


def test_effective_rank() -> None:
    values = torch.tensor([[3.0, 3.0, 3.0, 3.0], [5.0, 0.0, 0.0, 0.0], [2.0, 1.0, 1.0, 0.0]])
    ranks = effective_rank(values)
    assert float(ranks[0]) == pytest.approx(4.0)
    assert float(ranks[1]) == pytest.approx(1.0)
    p = np.array([0.5, 0.25, 0.25])
    assert float(ranks[2]) == pytest.approx(math.exp(-(p * np.log(p)).sum()))


def test_symmetric_part_eigenvalues_match_dense_and_planted_signature() -> None:
    weights = random_weights(5)
    forms = bilinear_forms(weights.weight_q, weights.weight_k, HEADS)
    reduced = symmetric_part_eigenvalues(weights.weight_q, weights.weight_k, HEADS)
    for h in range(HEADS):
        dense = torch.linalg.eigvalsh((forms[h] + forms[h].T) / 2)
        nonzero = dense[dense.abs() > 1e-9]
        expected = np.sort(np.concatenate([nonzero.numpy(), np.zeros(2 * DK - len(nonzero))]))
        np.testing.assert_allclose(np.sort(reduced[h].numpy()), expected, atol=1e-9)
    e = torch.eye(D, dtype=torch.float64)
    w_q = torch.stack([e[0], e[1], e[2]])
    w_k = torch.stack([2 * e[0], -3 * e[1], 0.5 * e[2]])
    eigenvalues = symmetric_part_eigenvalues(w_q, w_k, 1)[0]
    assert eigen_signature(eigenvalues, D) == (2, 1, D - 3)
    assert eigen_signature(eigenvalues, D, rtol=0.5) == (1, 1, D - 2)


def test_principal_angles_match_scipy() -> None:
    rng = np.random.default_rng(6)
    a = rng.normal(size=(10, 3))
    near = a @ rng.normal(size=(3, 3)) + 1e-7 * rng.normal(size=(10, 3))
    for b in (rng.normal(size=(10, 4)), rng.normal(size=(10, 2)), near):
        ours = principal_angles(torch.from_numpy(a), torch.from_numpy(b)).numpy()
        np.testing.assert_allclose(ours, subspace_angles(a, b)[::-1], atol=1e-12)
        mean_cos2 = float(np.mean(np.cos(subspace_angles(a, b)) ** 2))
        assert subspace_overlap(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(
            mean_cos2
        )
    e = torch.eye(6, dtype=torch.float64)
    assert subspace_overlap(
        e[:, :2], e[:, :2] @ torch.tensor([[1.0, 2.0], [3.0, 1.0]], dtype=torch.float64)
    ) == (pytest.approx(1.0))
    assert subspace_overlap(e[:, :2], e[:, 2:5]) == pytest.approx(0.0)
    assert orthonormal_basis(torch.zeros(4, 2)).shape == (4, 0)


def test_weight_subspace_measures_tables_and_overlaps() -> None:
    layers = [random_weights(7), random_weights(8)]
    result = weight_subspace_measures(layers)
    table = result.table
    assert list(table.columns) == ["layer", "head", "class", "metric", "value"]
    assert set(table["class"]) == {"all"}
    metrics = set(table["metric"])
    for name in (
        "effective_rank",
        "asymmetry",
        "symmetry_score",
        "directionality_score",
        "eig_positive",
        "eig_negative",
        "eig_zero",
        "query_overlap_mean",
    ):
        assert f"subspace.{name}" in metrics
    assert "subspace.layer.symmetry_score" in metrics
    assert result.singular_values.shape == (2, HEADS, DK)
    for kind, matrices in result.overlaps.items():
        assert matrices.shape == (2, HEADS, HEADS)
        if kind != "query_key":
            np.testing.assert_allclose(np.diagonal(matrices, axis1=1, axis2=2), 1.0, atol=1e-12)
    weights = layers[1]
    for h, g in itertools.product(range(HEADS), repeat=2):
        q_h = weights.weight_q[h * DK : (h + 1) * DK].T
        k_g = weights.weight_k[g * DK : (g + 1) * DK].T
        o_h = weights.weight_o[:, h * DK : (h + 1) * DK]
        o_g = weights.weight_o[:, g * DK : (g + 1) * DK]
        assert result.overlaps["query_key"][1, h, g] == pytest.approx(subspace_overlap(q_h, k_g))
        assert result.overlaps["write"][1, h, g] == pytest.approx(subspace_overlap(o_h, o_g))
    by_key = table.set_index(["layer", "head", "metric"])["value"]
    full = weights.weight_q.T @ weights.weight_k
    assert by_key[(1, -1, "subspace.layer.symmetry_score")] == pytest.approx(symmetry_score(full))
    counts = sum(by_key[(1, 0, f"subspace.eig_{s}")] for s in ("positive", "negative", "zero"))
    assert counts == D


def test_bilinear_form_reproduces_bert_attention() -> None:
    """x_i^T M_h x_j + bias terms, sliced from a real BertModel, gives its eager attention."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=32,
        max_position_embeddings=16,
        attn_implementation="eager",
    )
    model = transformers.BertModel(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.5)  # non-zero biases, so dropping one would be caught
    ids = torch.randint(0, 40, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    with torch.no_grad():
        out = model(ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    for layer in range(2):
        attention = model.encoder.layer[layer].attention.self
        args = (attention.query.weight, attention.query.bias, attention.key.weight)
        scores = attention_scores(out.hidden_states[layer], *args, attention.key.bias, 4)
        masked = scores.masked_fill(~mask.bool()[:, None, None, :], -math.inf)
        expected = out.attentions[layer].to(torch.float64)
        torch.testing.assert_close(masked.softmax(-1), expected, rtol=1e-4, atol=1e-5)
        # pre-softmax scores are recovered up to a per-row constant: log A_ij - log A_i0
        log_ratio = expected[0].log() - expected[0, :, :, :1].log()
        torch.testing.assert_close(scores[0] - scores[0, :, :, :1], log_ratio, rtol=1e-3, atol=1e-3)
        # the bug of the paper's code: slicing heads along the input axis does not reproduce it
        wrong = attention_scores(
            out.hidden_states[layer],
            attention.query.weight.T,
            attention.query.bias,
            attention.key.weight.T,
            attention.key.bias,
            4,
        )
        assert not torch.allclose(wrong.softmax(-1)[0], expected[0], atol=1e-3)
        no_bias = attention_scores(out.hidden_states[layer], args[0], None, args[2], None, 4)
        assert not torch.allclose(no_bias.softmax(-1)[0], expected[0], atol=1e-3)
