"""Attention rollout on examples worked by hand."""

from __future__ import annotations

import pytest
import torch

from zoo.interpret.rollout import attention_rollout, fuse_heads


def test_two_layers_rolled_out_by_hand() -> None:
    # layer 1: token 0 looks half at each token, token 1 at itself; layer 2 the other way
    w1 = torch.tensor([[0.5, 0.5], [0.0, 1.0]])
    w2 = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    # with the residual: A = (W + I) / 2, so A1 = [[.75, .25], [0, 1]], A2 = [[1, 0], [.25, .75]]
    expected = torch.tensor([[0.75, 0.25], [0.1875, 0.8125]])  # A2 @ A1
    # two heads whose mean is the layer's weights
    layers = [torch.stack([w + d, w - d])[None] for w, d in ((w1, 0.1 * w1), (w2, 0.1 * w2))]
    rolled = attention_rollout(layers)
    torch.testing.assert_close(rolled[0], expected)
    torch.testing.assert_close(rolled.sum(-1), torch.ones(1, 2))


def test_max_and_min_fusion_renormalise_the_rows() -> None:
    heads = torch.tensor([[[0.9, 0.1], [0.2, 0.8]], [[0.3, 0.7], [0.6, 0.4]]])[None]  # (1,2,2,2)
    assert torch.equal(fuse_heads(heads, "max")[0], torch.tensor([[0.9, 0.7], [0.6, 0.8]]))
    # max: rows [1.9, 0.7] / 2.6 and [0.6, 1.8] / 2.4 after adding the identity
    expected = torch.tensor([[1.9 / 2.6, 0.7 / 2.6], [0.6 / 2.4, 1.8 / 2.4]])
    torch.testing.assert_close(attention_rollout([heads], "max")[0], expected)
    # min: [[0.3, 0.1], [0.2, 0.4]] + I -> rows [1.3, 0.1] / 1.4 and [0.2, 1.4] / 1.6
    expected = torch.tensor([[1.3 / 1.4, 0.1 / 1.4], [0.2 / 1.6, 1.4 / 1.6]])
    torch.testing.assert_close(attention_rollout([heads], "min")[0], expected)


def test_rollout_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one layer"):
        attention_rollout([])
    with pytest.raises(ValueError, match="unknown head fusion 'median'"):
        attention_rollout([torch.rand(1, 2, 3, 3)], "median")
    with pytest.raises(ValueError, match="layer 1 has attention of shape"):
        attention_rollout([torch.rand(1, 2, 3, 3), torch.rand(1, 2, 4, 4)])
