"""Top-k straight-through Gumbel mix and token corruption (pure tensors)."""
from __future__ import annotations

import pytest
import torch

from projects.sa2va.models.gumbel import (allowed_token_ids, corrupt_tokens,
                                          mix_embedding_rows, topk_straight_through)


def _case(n=6, v=50, d=5, k=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, v, generator=g, requires_grad=True)
    table = torch.randn(v, d, generator=g)
    noise = -torch.log(-torch.log(torch.rand(n, k, generator=g).clamp(1e-6, 1 - 1e-6)))
    return logits, table, noise


@pytest.mark.parametrize('chunk', [1, 3, 7, 100])
def test_chunked_mix_equals_unchunked_formula(chunk):
    logits, table, noise = _case()
    w, ids, _ = topk_straight_through(logits, 7, 0.7, noise=noise)
    soft = torch.softmax(torch.randn(6, 7, generator=torch.Generator().manual_seed(1)), -1)
    ref = (soft[..., None] * table[ids]).sum(1)              # (N, k, D) formula
    torch.testing.assert_close(mix_embedding_rows(soft, ids, table, chunk), ref)
    # forward of the straight-through weights = exactly the selected row
    torch.testing.assert_close(mix_embedding_rows(w, ids, table, chunk),
                               table[ids.gather(1, w.argmax(1, keepdim=True))[:, 0]])


def test_straight_through_forward_hard_backward_soft():
    logits, table, noise = _case()
    tau = 0.7
    w, ids, hard = topk_straight_through(logits, 7, tau, noise=noise)
    values = logits.topk(7, -1).values
    y_soft = torch.softmax((values + noise) / tau, -1)
    assert torch.equal(w.detach(), torch.nn.functional.one_hot(y_soft.argmax(-1), 7).float())
    assert torch.equal(hard, ids.gather(1, y_soft.argmax(-1, keepdim=True))[:, 0])
    coef = torch.randn(6, 7, generator=torch.Generator().manual_seed(3))
    (w * coef).sum().backward()
    g_st = logits.grad.clone()
    logits.grad = None
    values = logits.topk(7, -1).values
    (torch.softmax((values + noise) / tau, -1) * coef).sum().backward()
    torch.testing.assert_close(g_st, logits.grad)
    assert g_st.abs().sum() > 0


def test_excluded_ids_never_in_topk():
    logits, _, _ = _case(v=20)
    # make the excluded ids the largest logits
    excluded = torch.tensor([0, 5, 19])
    boosted = logits.detach().clone()
    boosted[:, excluded] = 100.0
    _, ids, hard = topk_straight_through(boosted, 17, 1.0, excluded_ids=excluded)
    assert ids.shape == (6, 17)                  # k capped to the 17 allowed ids
    assert not torch.isin(ids, excluded).any()
    assert not torch.isin(hard, excluded).any()


def test_corruption_never_inserts_special_ids():
    g = torch.Generator().manual_seed(0)
    v, special = 40, [0, 1, 7, 39]
    allowed = allowed_token_ids(v, special)
    assert sorted(set(range(v)) - set(allowed.tolist())) == special
    tokens = torch.randint(8, 39, (64, 32), generator=g)
    valid = torch.arange(32)[None] < torch.randint(0, 33, (64, 1), generator=g)
    tokens = torch.where(valid, tokens, torch.zeros_like(tokens))  # pad 0
    out, chosen = corrupt_tokens(tokens, valid, 0.25, allowed, generator=g)
    assert not torch.isin(out[chosen], torch.tensor(special)).any()
    assert torch.equal(out[~valid], tokens[~valid])            # padding untouched
    assert torch.equal(out[~chosen], tokens[~chosen])
    assert not chosen[~valid].any()
    rate = chosen.sum().item() / valid.sum().item()
    assert 0.2 < rate < 0.3, rate
    full, chosen1 = corrupt_tokens(tokens, valid, 1.0, allowed, generator=g)
    assert torch.equal(chosen1, valid)
    with pytest.raises(ValueError, match='ratio'):
        corrupt_tokens(tokens, valid, 1.5, allowed)
    with pytest.raises(ValueError, match='forbidden'):
        allowed_token_ids(3, [0, 1, 2])
