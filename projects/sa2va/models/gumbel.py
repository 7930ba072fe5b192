"""Token-level pieces of the mask <-> caption cycle: corruption and the
top-k straight-through Gumbel-softmax mix of embedding rows.

Both work on flat lists of caption positions (``N`` rows, one per real
caption token of the batch), never on padded ``(B, T, V)`` tensors.
"""
from __future__ import annotations

from typing import Iterable, Optional, Tuple

import torch
from torch import Tensor


def _rand(shape, generator: Optional[torch.Generator], device) -> Tensor:
    """``U(0, 1)`` float32 on ``device``; a given generator draws on CPU
    (reproducible across devices)."""
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator).to(device)


def allowed_token_ids(vocab_size: int, forbidden: Iterable[int],
                      device=None) -> Tensor:
    """``(V',)`` long: the ids of ``[0, vocab_size)`` not in ``forbidden``.

    Raises:
        ValueError: every id is forbidden.
    """
    keep = torch.ones(int(vocab_size), dtype=torch.bool, device=device)
    bad = [int(i) for i in forbidden if 0 <= int(i) < vocab_size]
    if bad:
        keep[torch.tensor(bad, dtype=torch.long, device=device)] = False
    ids = torch.nonzero(keep).flatten()
    if ids.numel() == 0:
        raise ValueError(f'all {vocab_size} ids are forbidden')
    return ids


def corrupt_tokens(tokens: Tensor, valid: Tensor, ratio: float,
                   allowed_ids: Tensor,
                   generator: Optional[torch.Generator] = None
                   ) -> Tuple[Tensor, Tensor]:
    """Replace a random ``ratio`` of the valid tokens with random allowed ids.

    Each valid position is chosen independently with probability ``ratio``;
    a chosen token becomes a uniform draw from ``allowed_ids`` (so special
    ids - ``[SEG]``, image / vp tokens, EOS, template ends - are never
    inserted; the draw may equal the original token, as in the owner's code).

    Args:
        tokens: ``(B, T)`` long caption ids.
        valid: ``(B, T)`` bool, True on real (non-pad) caption tokens.
        ratio: probability in ``[0, 1]``.
        allowed_ids: ``(V',)`` long candidate ids (:func:`allowed_token_ids`).
        generator: optional RNG (on ``tokens.device``'s type, CPU here).

    Returns:
        ``(corrupted (B, T) long, chosen (B, T) bool)``; padding untouched.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f'corruption ratio must be in [0, 1], got {ratio}')
    if tokens.shape != valid.shape:
        raise ValueError(f'tokens {tuple(tokens.shape)} vs valid {tuple(valid.shape)}')
    u = _rand(tokens.shape, generator, tokens.device)
    chosen = valid.bool() & (u < ratio)
    draw = (_rand(tokens.shape, generator, tokens.device)
            * allowed_ids.numel()).long().clamp_(max=allowed_ids.numel() - 1)
    replacement = allowed_ids.to(tokens.device)[draw]
    return torch.where(chosen, replacement, tokens), chosen


def gumbel_noise(shape, generator: Optional[torch.Generator] = None,
                 device=None, eps: float = 1e-10) -> Tensor:
    """``-log(-log(u))`` with ``u ~ U(eps, 1 - eps)``, float32."""
    u = _rand(shape, generator, device).clamp(eps, 1.0 - eps)
    return -torch.log(-torch.log(u))


def topk_straight_through(logits: Tensor, k: int, tau: float,
                          excluded_ids: Optional[Tensor] = None,
                          noise: Optional[Tensor] = None,
                          generator: Optional[torch.Generator] = None
                          ) -> Tuple[Tensor, Tensor, Tensor]:
    """Top-k straight-through Gumbel-softmax weights.

    Args:
        logits: ``(N, V)`` float (bf16 allowed) caption logits.
        k: candidates per row (``min(k, allowed V)``).
        tau: softmax temperature (> 0); shapes only the backward pass.
        excluded_ids: ``(E,)`` long ids never selected (set to -inf).
        noise: optional ``(N, k)`` float Gumbel noise (tests); drawn otherwise.

    Returns:
        ``(weights (N, k) float32, top_ids (N, k) long, hard (N,) long)``:
        the weights are one-hot at the argmax of ``(v + g)`` in the forward
        pass, with the gradient of ``softmax((v + g) / tau)``; ``hard`` is the
        selected vocabulary id of each row.
    """
    if tau <= 0:
        raise ValueError(f'Gumbel temperature must be > 0, got {tau}')
    if excluded_ids is not None and excluded_ids.numel():
        logits = logits.index_fill(-1, excluded_ids.to(logits.device), float('-inf'))
    k = min(int(k), logits.shape[-1] - (0 if excluded_ids is None else excluded_ids.numel()))
    values, top_ids = logits.topk(k, dim=-1)
    if noise is None:
        noise = gumbel_noise(values.shape, generator, values.device)
    y_soft = torch.softmax((values.float() + noise.float()) / tau, dim=-1)
    index = y_soft.argmax(-1, keepdim=True)
    y_hard = torch.zeros_like(y_soft).scatter_(-1, index, 1.0)
    weights = y_hard - y_soft.detach() + y_soft
    return weights, top_ids, top_ids.gather(-1, index)[:, 0]


def mix_embedding_rows(weights: Tensor, top_ids: Tensor, embedding: Tensor,
                       chunk: int = 8) -> Tensor:
    """``out[n] = sum_j weights[n, j] * embedding[top_ids[n, j]]``, chunked.

    Memory: at most ``(N, chunk, D)`` rows are gathered at a time, never
    ``(N, k, D)`` (the owner's ``(B, T, k, D)``).

    Args:
        weights: ``(N, k)`` float (gradient kept).
        top_ids: ``(N, k)`` long.
        embedding: ``(V, D)`` embedding matrix (treated as frozen: detached).
        chunk: entries of ``k`` per step (>= 1).

    Returns:
        ``(N, D)`` in ``embedding``'s dtype.
    """
    if chunk < 1:
        raise ValueError(f'chunk must be >= 1, got {chunk}')
    table = embedding.detach()
    w = weights.to(table.dtype)
    out = None
    for start in range(0, top_ids.shape[1], chunk):
        rows = table[top_ids[:, start:start + chunk]]            # (N, c, D)
        part = torch.einsum('nc,ncd->nd', w[:, start:start + chunk], rows)
        out = part if out is None else out + part
    if out is None:
        raise ValueError('no candidates to mix (k = 0)')
    return out
