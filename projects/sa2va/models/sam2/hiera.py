"""Hiera trunk of the SAM2 image encoder (``image_encoder.trunk.*``).

Four stages at strides 4 / 8 / 16 / 32; the first block of stages 2-4 max-pools
the queries 2x2 (q-pool) and widens the channels. Blocks attend inside
non-overlapping windows (zero-padded, padding not masked) or globally.
All tensors inside the trunk are channels-last ``(B, H, W, C)``.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import MLP, bhwc_max_pool, drop_path, sdpa


def window_partition(x: Tensor, window: int) -> Tuple[Tensor, Tuple[int, int]]:
    """Zero-pad ``(B, H, W, C)`` at the bottom / right to multiples of
    ``window`` and cut it into ``(B * nWin, window, window, C)`` windows in
    row-major window order. Returns the windows and the padded ``(Hp, Wp)``."""
    b, h, w, c = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c)
    return (x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c),
            (hp, wp))


def window_unpartition(windows: Tensor, window: int, pad_hw: Tuple[int, int],
                       hw: Tuple[int, int]) -> Tensor:
    """Inverse of :func:`window_partition`: ``(B * nWin, w, w, C)`` ->
    ``(B, H, W, C)`` with the padding cropped."""
    hp, wp = pad_hw
    h, w = hw
    b = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.reshape(b, hp // window, wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, :h, :w, :].contiguous()


class PatchEmbed(nn.Module):
    """7x7 conv, stride 4, padding 3: ``(B, 3, S, S) -> (B, S/4, S/4, E)``."""

    def __init__(self, in_chans: int = 3, embed_dim: int = 96) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=7, stride=4,
                              padding=3)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    """Multi-head attention of one Hiera block.

    ``qkv``: dim -> 3*dim_out, split ``[q | k | v]``, each into heads;
    in a q-pool block only q is max-pooled (spatially, per window);
    ``proj``: dim_out -> dim_out. Input ``(B', h, w, dim)``, output
    ``(B', h / s, w / s, dim_out)`` with s the q stride (1 when none).
    """

    def __init__(self, dim: int, dim_out: int, num_heads: int,
                 q_stride: Optional[Tuple[int, int]] = None) -> None:
        super().__init__()
        self.dim_out = dim_out
        self.num_heads = num_heads
        self.q_stride = q_stride
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1)
        q, k, v = qkv.unbind(2)                      # (B', hw, heads, d)
        if self.q_stride is not None:
            q = bhwc_max_pool(q.reshape(b, h, w, -1), self.q_stride)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, -1)
        out = sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        out = out.transpose(1, 2).reshape(b, h, w, -1)
        return self.proj(out)


class MultiScaleBlock(nn.Module):
    """Hiera block: pre-norm (windowed) attention + pre-norm GELU MLP.

    When ``dim != dim_out`` (q-pool blocks) the shortcut is ``proj`` of the
    *normed* input, max-pooled by ``q_stride``. ``window_size`` 0 means
    global attention. Input ``(B, H, W, dim)``, output
    ``(B, H/s, W/s, dim_out)``.
    """

    def __init__(self, dim: int, dim_out: int, num_heads: int,
                 mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 q_stride: Optional[Tuple[int, int]] = None,
                 window_size: int = 0) -> None:
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.window_size = window_size
        self.q_stride = q_stride
        self.drop_path = drop_path
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, q_stride)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio), dim_out, 2,
                       activation=nn.GELU)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = bhwc_max_pool(self.proj(x), self.q_stride)
        window = self.window_size
        if window > 0:
            x, _ = window_partition(x, window)
        x = self.attn(x)
        if window > 0:
            if self.q_stride is not None:
                window = window // self.q_stride[0]
            h, w = shortcut.shape[1:3]
            pad_hw = (h + (-h) % window, w + (-w) % window)
            x = window_unpartition(x, window, pad_hw, (h, w))
        x = shortcut + drop_path(x, self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path,
                             self.training)


class Hiera(nn.Module):
    """Hierarchical ViT trunk (yaml ``image_encoder.trunk``).

    The arguments and their defaults are those of the official constructor
    (the b+ yaml relies on them). Block i's window size comes from the stage
    block i *starts* in (a q-pool block keeps the previous stage's window and
    halves it after pooling); blocks in ``global_att_blocks`` use window 0.

    forward: images ``(B, 3, S, S)`` normalised float -> list of 4 maps
    ``(B, C_i, S / 2^(i+2), S / 2^(i+2))``, ``C_i = embed_dim * dim_mul^i``,
    finest first (``return_interm_layers``; otherwise only the last).
    ``channel_list`` lists the output channels coarsest first (the neck's
    ``backbone_channel_list``).
    """

    def __init__(self, embed_dim: int = 96, num_heads: int = 1,
                 drop_path_rate: float = 0.0, q_pool: int = 3,
                 q_stride: Tuple[int, int] = (2, 2),
                 stages: Sequence[int] = (2, 3, 16, 3),
                 dim_mul: float = 2.0, head_mul: float = 2.0,
                 window_pos_embed_bkg_spatial_size: Sequence[int] = (14, 14),
                 window_spec: Sequence[int] = (8, 4, 14, 7),
                 global_att_blocks: Sequence[int] = (12, 16, 20),
                 weights_path: Optional[str] = None,
                 return_interm_layers: bool = True) -> None:
        super().__init__()
        if len(stages) != len(window_spec):
            raise ValueError(f'stages {list(stages)} and window_spec '
                             f'{list(window_spec)} differ in length')
        if weights_path is not None:
            raise ValueError('Hiera weights_path is not supported: load a full '
                             'SAM2 checkpoint with build_sam2(checkpoint=...)')
        depth = sum(stages)
        self.q_stride = tuple(q_stride)
        self.stage_ends = [sum(stages[:i]) - 1 for i in range(1, len(stages) + 1)]
        self.q_pool_blocks = [e + 1 for e in self.stage_ends[:-1]][:q_pool]
        self.return_interm_layers = return_interm_layers
        self.global_att_blocks = list(global_att_blocks)
        self.window_spec = list(window_spec)

        self.patch_embed = PatchEmbed(embed_dim=embed_dim)
        self.pos_embed = nn.Parameter(
            torch.zeros(1, embed_dim, *window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(
            torch.zeros(1, embed_dim, window_spec[0], window_spec[0]))

        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth,
                                                device='cpu')]
        blocks = []
        stage = 1
        for i in range(depth):
            dim_out = embed_dim
            window = self.window_spec[stage - 1]
            if i in self.global_att_blocks:
                window = 0
            if i - 1 in self.stage_ends:
                dim_out = int(embed_dim * dim_mul)
                num_heads = int(num_heads * head_mul)
                stage += 1
            blocks.append(MultiScaleBlock(
                dim=embed_dim, dim_out=dim_out, num_heads=num_heads,
                drop_path=dpr[i],
                q_stride=self.q_stride if i in self.q_pool_blocks else None,
                window_size=window))
            embed_dim = dim_out
        self.blocks = nn.ModuleList(blocks)
        self.channel_list = (
            [self.blocks[i].dim_out for i in self.stage_ends[::-1]]
            if return_interm_layers else [self.blocks[-1].dim_out])

    def get_pos_embed(self, hw: Tuple[int, int]) -> Tensor:
        """Position embedding ``(1, h, w, E)``: ``pos_embed`` bicubic-resized
        to ``hw`` (align_corners False) plus ``pos_embed_window`` tiled."""
        h, w = hw
        win = self.pos_embed_window
        wh, ww = win.shape[-2:]
        if h % wh or w % ww:
            raise ValueError(f'patch grid {h}x{w} is not a multiple of the '
                             f'window position embedding {wh}x{ww}')
        pos = F.interpolate(self.pos_embed, size=(h, w), mode='bicubic')
        pos = pos + win.tile(1, 1, h // wh, w // ww)
        return pos.permute(0, 2, 3, 1)

    def forward(self, x: Tensor, return_blocks: bool = False):
        """See the class docstring; with ``return_blocks`` also returns the
        list of every block's ``(B, h, w, C)`` output (for debugging)."""
        x = self.patch_embed(x)
        x = x + self.get_pos_embed(x.shape[1:3])
        outputs: List[Tensor] = []
        block_outs: List[Tensor] = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if return_blocks:
                block_outs.append(x)
            if i == self.stage_ends[-1] or (i in self.stage_ends
                                             and self.return_interm_layers):
                outputs.append(x.permute(0, 3, 1, 2))
        return (outputs, block_outs) if return_blocks else outputs
