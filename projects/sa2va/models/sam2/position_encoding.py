"""Position encodings of SAM2: normalised sine (image / memory features),
random Fourier features (prompt encoder), axial RoPE (memory attention) and
the 1-D sine encoding of object-pointer time offsets.

Nothing here is stored in a checkpoint except the prompt encoder's Gaussian
matrix (``positional_encoding_gaussian_matrix``, a persistent buffer); the
other tables are recomputed from sizes on the device of the input.
"""
import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn


class PositionEmbeddingSine(nn.Module):
    """Normalised 2-D sine encoding of a feature map.

    For row y = 1..H and column x = 1..W (scaled by ``scale / (last + 1e-6)``
    when ``normalize``), frequencies ``temperature ** (2 * (k // 2) / (F/2))``
    for k < F/2; even channels hold sin, odd cos; channels ``[0, F/2)`` encode
    y and ``[F/2, F)`` encode x.

    Args:
        num_pos_feats: F, the number of output channels (even).
        temperature, normalize, scale: as in the official yaml
            (``scale=None`` means 2*pi).

    forward: x ``(B, C, H, W)`` (only shape / device / dtype are read) ->
    ``(B, F, H, W)`` in ``x.dtype``, identical for every batch element.
    """

    def __init__(self, num_pos_feats: int, temperature: int = 10000,
                 normalize: bool = True, scale: Optional[float] = None) -> None:
        super().__init__()
        if num_pos_feats % 2:
            raise ValueError(f'num_pos_feats must be even, got {num_pos_feats}')
        if scale is not None and not normalize:
            raise ValueError('scale is only used with normalize=True')
        self.num_pos_feats = num_pos_feats // 2
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def encode(self, h: int, w: int, device) -> Tensor:
        """``(F, H, W)`` float32 encoding of an ``h x w`` grid."""
        y = torch.arange(1, h + 1, dtype=torch.float32, device=device)
        x = torch.arange(1, w + 1, dtype=torch.float32, device=device)
        if self.normalize:
            eps = 1e-6
            y = y / (y[-1:] + eps) * self.scale
            x = x / (x[-1:] + eps) * self.scale
        n = self.num_pos_feats
        dim_t = torch.arange(n, dtype=torch.float32, device=device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / n)

        def one_axis(pos: Tensor) -> Tensor:  # (L,) -> (L, n)
            p = pos[:, None] / dim_t
            return torch.stack((p[:, 0::2].sin(), p[:, 1::2].cos()),
                               dim=2).flatten(1)

        pos_y = one_axis(y)[:, None, :].expand(h, w, n)
        pos_x = one_axis(x)[None, :, :].expand(h, w, n)
        return torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        pos = self.encode(h, w, x.device).to(x.dtype)
        return pos[None].expand(b, -1, -1, -1)


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier position encoding of the prompt encoder.

    ``positional_encoding_gaussian_matrix`` ``(2, num_pos_feats)`` is the one
    persistent buffer of SAM2. A coordinate c in [0, 1]^2 maps to
    ``[sin(2 pi (2c - 1) G), cos(2 pi (2c - 1) G)]`` of size
    ``2 * num_pos_feats``.
    """

    def __init__(self, num_pos_feats: int = 64,
                 scale: Optional[float] = None) -> None:
        super().__init__()
        scale = 1.0 if scale is None or scale <= 0.0 else scale
        self.register_buffer('positional_encoding_gaussian_matrix',
                             scale * torch.randn((2, num_pos_feats)))

    def _pe_encoding(self, coords: Tensor) -> Tensor:
        """coords ``(..., 2)`` in [0, 1] (x, y) -> ``(..., 2*num_pos_feats)``
        in the dtype of the Gaussian matrix."""
        gaussian = self.positional_encoding_gaussian_matrix
        coords = (2 * coords - 1).to(gaussian.dtype) @ gaussian
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: Tuple[int, int]) -> Tensor:
        """Encoding of the cell centres of an ``(h, w)`` grid:
        ``(2*num_pos_feats, h, w)``."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        y = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
        x = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
        grid = torch.stack([x[None, :].expand(h, w), y[:, None].expand(h, w)],
                           dim=-1)
        return self._pe_encoding(grid).permute(2, 0, 1)

    def forward_with_coords(self, coords_input: Tensor,
                            image_size: Tuple[int, int]) -> Tensor:
        """coords ``(B, N, 2)`` in pixels (x, y) of an ``image_size`` (h, w)
        image -> ``(B, N, 2*num_pos_feats)``."""
        coords = torch.stack([coords_input[..., 0] / image_size[1],
                              coords_input[..., 1] / image_size[0]], dim=-1)
        return self._pe_encoding(coords.to(torch.float))


def axial_rope_angles(dim: int, end_x: int, end_y: int, theta: float,
                      device=None) -> Tuple[Tensor, Tensor]:
    """Cos / sin tables of 2-D axial RoPE for a row-major ``end_y x end_x``
    grid (token t sits at x = t % end_x, y = t // end_x).

    The first ``dim / 4`` channel pairs rotate with x, the next ``dim / 4``
    with y, at frequencies ``theta ** (-4 k / dim)``. Returns two float32
    tensors of shape ``(end_x * end_y, dim / 2)``.
    """
    if dim % 4:
        raise ValueError(f'RoPE head dim must be a multiple of 4, got {dim}')
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4, device=device)[: dim // 4]
                             .float() / dim))
    t = torch.arange(end_x * end_y, device=device)
    t_x = (t % end_x).float()
    t_y = torch.div(t, end_x, rounding_mode='floor').float()
    angles = torch.cat([torch.outer(t_x, freqs), torch.outer(t_y, freqs)],
                       dim=-1)
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate consecutive channel pairs ``(2i, 2i+1)`` of ``x``
    ``(..., L, dim)`` by the angles whose cos / sin are ``(L, dim/2)``.
    Computed in float32, returned in ``x.dtype``."""
    xf = x.float().reshape(*x.shape[:-1], -1, 2)
    a, b = xf[..., 0], xf[..., 1]
    out = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1)
    return out.flatten(-2).to(x.dtype)


def get_1d_sine_pe(pos_inds: Tensor, dim: int,
                   temperature: float = 10000) -> Tensor:
    """1-D sine encoding ``[sin(p / T^(2(k//2)/(dim/2))), cos(...)]`` of
    positions ``(N,)`` -> ``(N, dim)`` float32 (used for object-pointer time
    offsets)."""
    pe_dim = dim // 2
    dim_t = torch.arange(pe_dim, dtype=torch.float32, device=pos_inds.device)
    dim_t = temperature ** (2 * (dim_t // 2) / pe_dim)
    pos = pos_inds.float().unsqueeze(-1) / dim_t
    return torch.cat([pos.sin(), pos.cos()], dim=-1)
