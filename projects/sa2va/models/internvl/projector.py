"""Pixel shuffle (ps_version v2) and the ``mlp1`` projector of InternVL.

``pixel_shuffle`` folds every 2 x 2 block of neighbouring ViT tokens into one token with 4C
channels, ordered top-left, top-right, bottom-left, bottom-right; ``mlp1`` maps it to the LLM
width: LayerNorm(4C, eps 1e-5) -> Linear(4C, D) -> GELU (erf) -> Linear(D, D). The Sequential
keeps the checkpoint keys ``mlp1.0`` (norm), ``mlp1.1`` and ``mlp1.3`` (linears).
"""
import torch
from torch import nn


def pixel_shuffle(grid: torch.Tensor, scale_factor: float = 0.5) -> torch.Tensor:
    """Pixel shuffle v2 of a token grid.

    Args:
        grid: ``(N, H, W, C)`` tokens, row-major (H rows, W columns), any dtype.
        scale_factor: 0.5 folds 2 x 2 blocks (H and W must be multiples of ``1 / scale``).

    Returns:
        ``(N, H * s, W * s, C / s ** 2)``; for s = 0.5 output token (i, j) holds, in channel
        blocks of C, the input tokens (2i, 2j), (2i, 2j+1), (2i+1, 2j), (2i+1, 2j+1).
    """
    if grid.dim() != 4:
        raise ValueError(f'pixel_shuffle expects (N, H, W, C), got {tuple(grid.shape)}')
    n, h, w, c = grid.shape
    step = round(1 / scale_factor)
    if h % step or w % step:
        raise ValueError(f'pixel_shuffle: grid {h}x{w} is not divisible by {step}')
    # merge horizontal neighbours (column 2j, then 2j+1): (N, H, W/2, 2C)
    x = grid.reshape(n, h, w // step, c * step)
    # rows become the inner axis, then merge vertical neighbours (row 2i, then 2i+1)
    x = x.permute(0, 2, 1, 3).reshape(n, w // step, h // step, c * step * step)
    # v2: back to (rows, cols)
    return x.permute(0, 2, 1, 3).contiguous()


def vit_tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
    """``(N, g * g, C)`` patch tokens (CLS removed) -> ``(N, g, g, C)`` row-major grid.

    Raises if the token count is not a perfect square (the InternVL convention).
    """
    n, length, c = tokens.shape
    g = int(round(length**0.5))
    if g * g != length:
        raise ValueError(f'vit_tokens_to_grid: {length} tokens do not form a square grid')
    return tokens.reshape(n, g, g, c)


def build_mlp1(vit_hidden_size: int, llm_hidden_size: int,
               downsample_ratio: float = 0.5) -> nn.Sequential:
    """The projector ``mlp1``.

    Args:
        vit_hidden_size: C of the ViT.
        llm_hidden_size: D of the LLM.
        downsample_ratio: pixel-shuffle scale s; the input width is ``C / s ** 2`` (4C).

    Returns:
        ``nn.Sequential(LayerNorm(4C, eps=1e-5), Linear(4C, D), GELU(), Linear(D, D))``:
        ``(..., 4C) -> (..., D)``.
    """
    in_features = int(vit_hidden_size * round(1 / downsample_ratio)**2)
    return nn.Sequential(
        nn.LayerNorm(in_features, eps=1e-5),
        nn.Linear(in_features, llm_hidden_size),
        nn.GELU(),
        nn.Linear(llm_hidden_size, llm_hidden_size),
    )
