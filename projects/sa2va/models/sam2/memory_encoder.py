"""SAM2 memory encoder (``memory_encoder.*``): fuses a frame's image
features with its predicted mask into memory features."""
import math
from typing import Dict, Optional, Type

import torch
from torch import Tensor, nn

from .common import LayerNorm2d, drop_path


class MaskDownSampler(nn.Module):
    """Mask ``(B, 1, S, S)`` -> ``(B, embed_dim, S / total_stride, ...)``.

    ``log(total_stride) / log(stride)`` blocks of conv (channels x stride^2),
    LayerNorm2d and activation (``encoder.{0,1,2}``, ``{3,4,5}``, ...), then a
    1x1 conv to ``embed_dim``.
    """

    def __init__(self, embed_dim: int = 256, kernel_size: int = 4,
                 stride: int = 4, padding: int = 0, total_stride: int = 16,
                 activation: Type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        num_layers = int(math.log2(total_stride) // math.log2(stride))
        if stride ** num_layers != total_stride:
            raise ValueError(f'total_stride {total_stride} is not a power of '
                             f'stride {stride}')
        layers = []
        c_in = 1
        for _ in range(num_layers):
            c_out = c_in * stride ** 2
            layers += [nn.Conv2d(c_in, c_out, kernel_size, stride, padding),
                       LayerNorm2d(c_out), activation()]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, embed_dim, kernel_size=1))
        self.encoder = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise conv, LayerNorm2d, pointwise MLP (GELU),
    layer scale ``gamma``, residual. ``(B, dim, H, W)`` -> same shape."""

    def __init__(self, dim: int, kernel_size: int = 7, padding: int = 3,
                 drop_path: float = 0.0, layer_scale_init_value: float = 1e-6,
                 use_dwconv: bool = True) -> None:
        super().__init__()
        if layer_scale_init_value > 0:
            self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(dim))
        else:
            self.gamma = None
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=padding,
                                groups=dim if use_dwconv else 1)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.drop_path = drop_path

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(y)))
        if self.gamma is not None:
            y = self.gamma * y
        return x + drop_path(y.permute(0, 3, 1, 2), self.drop_path,
                             self.training)


class Fuser(nn.Module):
    """``num_layers`` copies of a :class:`CXBlock` (``layers.{k}``), with an
    optional 1x1 input projection. ``(B, dim, H, W)`` -> same shape."""

    def __init__(self, layer_cfg: dict, num_layers: int,
                 dim: Optional[int] = None, input_projection: bool = False
                 ) -> None:
        super().__init__()
        self.proj = nn.Identity()
        self.layers = nn.ModuleList(CXBlock(**layer_cfg)
                                    for _ in range(num_layers))
        if input_projection:
            if dim is None:
                raise ValueError('Fuser input_projection needs dim')
            self.proj = nn.Conv2d(dim, dim, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(x)
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """Memory features of one frame (yaml ``memory_encoder``).

    forward: pix_feat ``(B, in_dim, h, w)`` (the frame's top-level backbone
    features), masks ``(B, 1, S, S)`` high-res mask logits (or already scaled
    values with ``skip_mask_sigmoid``) -> dict ``vision_features``
    ``(B, out_dim, h, w)`` and ``vision_pos_enc`` ``[(B, out_dim, h, w)]``.
    """

    def __init__(self, out_dim: int, mask_downsampler: MaskDownSampler,
                 fuser: Fuser, position_encoding: nn.Module,
                 in_dim: int = 256) -> None:
        super().__init__()
        self.mask_downsampler = mask_downsampler
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = fuser
        self.position_encoding = position_encoding
        self.out_proj = (nn.Conv2d(in_dim, out_dim, kernel_size=1)
                         if out_dim != in_dim else nn.Identity())

    def forward(self, pix_feat: Tensor, masks: Tensor,
                skip_mask_sigmoid: bool = False) -> Dict[str, object]:
        if not skip_mask_sigmoid:
            masks = torch.sigmoid(masks)
        masks = self.mask_downsampler(masks)
        x = self.pix_feat_proj(pix_feat.to(masks.device)) + masks
        x = self.out_proj(self.fuser(x))
        pos = self.position_encoding(x).to(x.dtype)
        return {'vision_features': x, 'vision_pos_enc': [pos]}
