"""SAM2 memory attention (``memory_attention.*``): conditions the current
frame's features on the memory bank with RoPE self- and cross-attention."""
from typing import Optional

from torch import Tensor, nn

from .common import get_activation
from .transformer import RoPEAttention


class MemoryAttentionLayer(nn.Module):
    """Pre-norm layer: RoPE self-attention, RoPE cross-attention to the memory
    (``cross_attn_image``), FFN (``linear1`` / ``linear2``), each with dropout
    and a residual. Batch-first: tgt ``(B, N, d_model)``, memory
    ``(B, M, kv_in_dim)``."""

    def __init__(self, activation: str, cross_attention: RoPEAttention,
                 d_model: int, dim_feedforward: int, dropout: float,
                 pos_enc_at_attn: bool, pos_enc_at_cross_attn_keys: bool,
                 pos_enc_at_cross_attn_queries: bool,
                 self_attention: RoPEAttention) -> None:
        super().__init__()
        self.d_model = d_model
        self.self_attn = self_attention
        self.cross_attn_image = cross_attention
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = get_activation(activation)()
        self.pos_enc_at_attn = pos_enc_at_attn
        self.pos_enc_at_cross_attn_queries = pos_enc_at_cross_attn_queries
        self.pos_enc_at_cross_attn_keys = pos_enc_at_cross_attn_keys

    def forward(self, tgt: Tensor, memory: Tensor, pos: Optional[Tensor] = None,
                query_pos: Optional[Tensor] = None,
                num_k_exclude_rope: int = 0) -> Tensor:
        x = self.norm1(tgt)
        q = x + query_pos if self.pos_enc_at_attn else x
        tgt = tgt + self.dropout1(self.self_attn(q, q, x))
        x = self.norm2(tgt)
        q = x + query_pos if self.pos_enc_at_cross_attn_queries else x
        k = memory + pos if self.pos_enc_at_cross_attn_keys else memory
        tgt = tgt + self.dropout2(self.cross_attn_image(
            q, k, memory, num_k_exclude_rope=num_k_exclude_rope))
        x = self.norm3(tgt)
        x = self.linear2(self.dropout(self.activation(self.linear1(x))))
        return tgt + self.dropout3(x)


class MemoryAttention(nn.Module):
    """Stack of ``num_layers`` :class:`MemoryAttentionLayer` (``layers.{k}``,
    independent weights) and a final LayerNorm (``norm``).

    forward (sequence-first, as SAM2Base stores features): curr ``(HW, B, d)``,
    memory ``(M, B, kv_in_dim)``, curr_pos ``(HW, B, d)``, memory_pos
    ``(M, B, kv_in_dim)``; the last ``num_obj_ptr_tokens`` memory tokens are
    object pointers (not rotated). Returns ``(HW, B, d)``.
    """

    def __init__(self, d_model: int, pos_enc_at_input: bool, layer_factory,
                 num_layers: int, batch_first: bool = True) -> None:
        super().__init__()
        self.d_model = d_model
        self.layers = nn.ModuleList(layer_factory() for _ in range(num_layers))
        self.num_layers = num_layers
        self.norm = nn.LayerNorm(d_model)
        self.pos_enc_at_input = pos_enc_at_input
        if not batch_first:
            raise ValueError('only batch_first memory attention is supported')

    def forward(self, curr: Tensor, memory: Tensor,
                curr_pos: Optional[Tensor] = None,
                memory_pos: Optional[Tensor] = None,
                num_obj_ptr_tokens: int = 0) -> Tensor:
        out = curr
        if self.pos_enc_at_input and curr_pos is not None:
            out = out + 0.1 * curr_pos
        out = out.transpose(0, 1)
        curr_pos = curr_pos.transpose(0, 1) if curr_pos is not None else None
        memory = memory.transpose(0, 1)
        memory_pos = (memory_pos.transpose(0, 1) if memory_pos is not None
                      else None)
        for layer in self.layers:
            out = layer(out, memory, pos=memory_pos, query_pos=curr_pos,
                        num_k_exclude_rope=num_obj_ptr_tokens)
        return self.norm(out).transpose(0, 1)
