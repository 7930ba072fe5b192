"""FPN neck and image encoder of SAM2 (``image_encoder.neck.*``)."""
from typing import Dict, List, Optional, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .hiera import Hiera
from .position_encoding import PositionEmbeddingSine


class FpnNeck(nn.Module):
    """Feature pyramid on the Hiera outputs (yaml ``image_encoder.neck``).

    ``convs.{j}.conv`` is the 1x1 lateral conv of ``backbone_channel_list[j]``
    channels; j = 0 is the *coarsest* trunk output. Coarse to fine, a level in
    ``fpn_top_down_levels`` adds the 2x-upsampled previous output to its
    lateral; any other level is its lateral alone.

    forward: trunk maps, finest first, ``(B, C_i, H_i, W_i)`` -> (features,
    positions): two lists, finest first, of ``(B, d_model, H_i, W_i)``.
    """

    def __init__(self, position_encoding: nn.Module, d_model: int,
                 backbone_channel_list: Sequence[int], kernel_size: int = 1,
                 stride: int = 1, padding: int = 0,
                 fpn_interp_model: str = 'bilinear', fuse_type: str = 'sum',
                 fpn_top_down_levels: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        if fuse_type not in ('sum', 'avg'):
            raise ValueError(f'fuse_type must be sum or avg, got {fuse_type!r}')
        self.position_encoding = position_encoding
        self.d_model = d_model
        self.backbone_channel_list = list(backbone_channel_list)
        self.convs = nn.ModuleList()
        for dim in backbone_channel_list:
            level = nn.Sequential()
            level.add_module('conv', nn.Conv2d(dim, d_model, kernel_size,
                                               stride, padding))
            self.convs.append(level)
        self.fpn_interp_model = fpn_interp_model
        self.fuse_type = fuse_type
        if fpn_top_down_levels is None:
            fpn_top_down_levels = range(len(self.convs))
        self.fpn_top_down_levels = list(fpn_top_down_levels)

    def forward(self, xs: List[Tensor]):
        n = len(self.convs) - 1
        if len(xs) != n + 1:
            raise ValueError(f'neck expects {n + 1} trunk maps, got {len(xs)}')
        out: List[Optional[Tensor]] = [None] * (n + 1)
        pos: List[Optional[Tensor]] = [None] * (n + 1)
        prev = None
        for i in range(n, -1, -1):
            lateral = self.convs[n - i](xs[i])
            if i in self.fpn_top_down_levels and prev is not None:
                top_down = F.interpolate(
                    prev.float(), scale_factor=2.0, mode=self.fpn_interp_model,
                    align_corners=(None if self.fpn_interp_model == 'nearest'
                                   else False),
                    antialias=False).to(lateral.dtype)
                prev = lateral + top_down
                if self.fuse_type == 'avg':
                    prev = prev / 2
            else:
                prev = lateral
            out[i] = prev
            pos[i] = self.position_encoding(prev).to(prev.dtype)
        return out, pos


class ImageEncoder(nn.Module):
    """Trunk + neck + scalp (yaml ``image_encoder``).

    forward: images ``(B, 3, S, S)`` -> dict ``vision_features``
    ``(B, d, S/16, S/16)``, ``vision_pos_enc`` and ``backbone_fpn``: lists
    (finest first) of ``len(trunk outputs) - scalp`` maps ``(B, d, H_i, W_i)``.
    The conv_s0 / conv_s1 projections are applied by :class:`SAM2Base`.
    """

    def __init__(self, trunk: Hiera, neck: FpnNeck, scalp: int = 0) -> None:
        super().__init__()
        self.trunk = trunk
        self.neck = neck
        self.scalp = scalp
        if trunk.channel_list != neck.backbone_channel_list:
            raise ValueError(
                f'trunk channel_list {trunk.channel_list} != neck '
                f'backbone_channel_list {neck.backbone_channel_list}')

    def forward(self, sample: Tensor) -> Dict[str, object]:
        features, pos = self.neck(self.trunk(sample))
        if self.scalp > 0:
            features, pos = features[:-self.scalp], pos[:-self.scalp]
        return {'vision_features': features[-1], 'vision_pos_enc': pos,
                'backbone_fpn': features}
