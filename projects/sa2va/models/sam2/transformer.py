"""Attention layers of SAM2: the projected multi-head :class:`Attention`,
its :class:`RoPEAttention` variant (memory attention) and the mask decoder's
:class:`TwoWayTransformer` (``sam_mask_decoder.transformer.*``)."""
import math
from typing import Dict, Optional, Sequence, Tuple, Type

import torch
from torch import Tensor, nn

from .common import MLP, merge_heads, sdpa, split_heads
from .position_encoding import apply_rope, axial_rope_angles


class Attention(nn.Module):
    """Multi-head attention with q / k / v projections to an internal dim
    ``embedding_dim // downsample_rate`` and an output projection back.

    q ``(B, Nq, embedding_dim)``, k / v ``(B, Nk, kv_in_dim)`` ->
    ``(B, Nq, embedding_dim)``. Dropout on the attention weights in training.
    """

    def __init__(self, embedding_dim: int, num_heads: int,
                 downsample_rate: int = 1, dropout: float = 0.0,
                 kv_in_dim: Optional[int] = None) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.kv_in_dim = kv_in_dim if kv_in_dim is not None else embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError(f'num_heads {num_heads} must divide the internal '
                             f'dim {self.internal_dim}')
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.v_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)
        self.dropout_p = dropout

    def _project(self, q: Tensor, k: Tensor, v: Tensor):
        return (split_heads(self.q_proj(q), self.num_heads),
                split_heads(self.k_proj(k), self.num_heads),
                split_heads(self.v_proj(v), self.num_heads))

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        p = self.dropout_p if self.training else 0.0
        return self.out_proj(merge_heads(sdpa(q, k, v, dropout_p=p)))

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return self._attend(*self._project(q, k, v))


class RoPEAttention(Attention):
    """:class:`Attention` with 2-D axial rotary position encoding on q and k.

    Queries are a row-major square grid (``Nq = side^2``; ``feat_sizes`` is
    the default grid, rebuilt when Nq differs). With ``rope_k_repeat`` the key
    sequence may be several grids (memory frames) whose rotations repeat; the
    last ``num_k_exclude_rope`` keys (object pointers) are not rotated.
    """

    def __init__(self, embedding_dim: int, num_heads: int,
                 downsample_rate: int = 1, dropout: float = 0.0,
                 kv_in_dim: Optional[int] = None, rope_theta: float = 10000.0,
                 rope_k_repeat: bool = False,
                 feat_sizes: Sequence[int] = (32, 32)) -> None:
        super().__init__(embedding_dim, num_heads, downsample_rate, dropout,
                         kv_in_dim)
        self.rope_theta = rope_theta
        self.rope_k_repeat = rope_k_repeat
        self.feat_sizes = tuple(feat_sizes)
        self._rope_cache: Dict[Tuple, Tuple[Tensor, Tensor]] = {}

    def _angles(self, n_q: int, device) -> Tuple[Tensor, Tensor]:
        side = math.isqrt(n_q)
        if side * side == n_q and n_q != self.feat_sizes[0] * self.feat_sizes[1]:
            end_x = end_y = side
        else:
            end_x, end_y = self.feat_sizes
        if end_x * end_y != n_q:
            raise ValueError(f'RoPE attention needs a square query grid, got '
                             f'{n_q} tokens (feat_sizes {self.feat_sizes})')
        key = (end_x, end_y, str(device))
        if key not in self._rope_cache:
            self._rope_cache[key] = axial_rope_angles(
                self.internal_dim // self.num_heads, end_x, end_y,
                self.rope_theta, device=device)
        return self._rope_cache[key]

    def forward(self, q: Tensor, k: Tensor, v: Tensor,
                num_k_exclude_rope: int = 0) -> Tensor:
        q, k, v = self._project(q, k, v)
        cos, sin = self._angles(q.shape[-2], q.device)
        q = apply_rope(q, cos, sin)
        n_rope = k.shape[-2] - num_k_exclude_rope
        if n_rope > 0:
            if n_rope != q.shape[-2]:
                if not self.rope_k_repeat or n_rope % q.shape[-2]:
                    raise ValueError(
                        f'{n_rope} rotated keys for {q.shape[-2]} queries '
                        f'(rope_k_repeat={self.rope_k_repeat})')
                r = n_rope // q.shape[-2]
                cos_k, sin_k = cos.repeat(r, 1), sin.repeat(r, 1)
            else:
                cos_k, sin_k = cos, sin
            k = torch.cat([apply_rope(k[:, :, :n_rope], cos_k, sin_k),
                           k[:, :, n_rope:]], dim=-2)
        return self._attend(q, k, v)


class TwoWayAttentionBlock(nn.Module):
    """One layer of the two-way transformer: token self-attention, token ->
    image cross-attention, token MLP, image -> token cross-attention, each
    followed by a residual and LayerNorm (eps 1e-5). In the first layer
    (``skip_first_layer_pe``) self-attention has no PE and no residual."""

    def __init__(self, embedding_dim: int, num_heads: int, mlp_dim: int = 2048,
                 activation: Type[nn.Module] = nn.ReLU,
                 attention_downsample_rate: int = 2,
                 skip_first_layer_pe: bool = False) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLP(embedding_dim, mlp_dim, embedding_dim, 2,
                       activation=activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries: Tensor, keys: Tensor, query_pe: Tensor,
                key_pe: Tensor) -> Tuple[Tensor, Tensor]:
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """Mask-decoder transformer (``sam_mask_decoder.transformer``).

    forward: image_embedding ``(B, C, h, w)``, image_pe ``(B, C, h, w)``,
    point_embedding (tokens) ``(B, N, C)`` -> (queries ``(B, N, C)``, keys
    ``(B, h*w, C)`` row-major), after a final token -> image attention and
    LayerNorm on the queries. The initial tokens are the query PE.
    """

    def __init__(self, depth: int, embedding_dim: int, num_heads: int,
                 mlp_dim: int, activation: Type[nn.Module] = nn.ReLU,
                 attention_downsample_rate: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, activation,
                                 attention_downsample_rate,
                                 skip_first_layer_pe=(i == 0))
            for i in range(depth))
        self.final_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(self, image_embedding: Tensor, image_pe: Tensor,
                point_embedding: Tensor) -> Tuple[Tensor, Tensor]:
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        q, k = queries + point_embedding, keys + key_pe
        queries = self.norm_final_attn(
            queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys
