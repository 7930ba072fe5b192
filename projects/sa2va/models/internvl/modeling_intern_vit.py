"""InternViT vision tower (300M and 6B families).

Module attribute names reproduce the official state-dict keys (``embeddings.class_embedding``,
``embeddings.position_embedding`` without ``.weight``, ``encoder.layers.N.{ls1,ls2}``,
``attn.qkv`` / ``attn.proj`` / ``attn.q_norm`` / ``attn.k_norm``, ``mlp.fc1`` / ``mlp.fc2``,
``norm1`` / ``norm2``). There is no post-encoder norm and no pooler parameter.

Computation (per ``shared/fixtures/internvl/README.md`` section 2): patch conv 14 x 14 -> CLS in
front -> add the (bicubic-resized) position table -> pre-norm layers
``x + ls1 * Attn(Norm1(x))``, ``x + ls2 * MLP(Norm2(x))``.
"""
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling

from projects.sa2va.compat import get_attn_implementation
from .configuration_internvl import InternVisionConfig


class InternRMSNorm(nn.Module):
    """RMS normalisation over the last dim, computed in float32, no bias.

    ``y = weight * (x / sqrt(mean(x ** 2) + eps)).to(x.dtype)``.

    Args:
        hidden_size (int): C, size of the normalised (last) dim; ``weight`` is ``(C,)``.
        eps (float): added to the mean square.

    Shapes: input ``(..., C)`` any float dtype -> output ``(..., C)`` same dtype.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.to(torch.float32)
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


def build_norm(norm_type: str, hidden_size: int, eps: float) -> nn.Module:
    """``'layer_norm'`` -> ``nn.LayerNorm(C, eps)`` (weight + bias); ``'rms_norm'`` -> InternRMSNorm."""
    if norm_type == 'layer_norm':
        return nn.LayerNorm(hidden_size, eps=eps)
    if norm_type == 'rms_norm':
        return InternRMSNorm(hidden_size, eps=eps)
    raise ValueError(f'unknown norm_type {norm_type!r}')


class DropPath(nn.Module):
    """Stochastic depth: in training, zero the whole residual branch of a sample with
    probability ``p`` and scale kept samples by ``1 / (1 - p)``; identity in eval or if p == 0.

    Shapes: ``(B, ...)`` -> ``(B, ...)``, same dtype; one Bernoulli draw per sample (dim 0).
    """

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f'DropPath probability must be in [0, 1), got {p}')
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0], ) + (1, ) * (x.dim() - 1)
        mask = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f'p={self.p}'


class InternVisionEmbeddings(nn.Module):
    """Patch embedding + class token + position embedding.

    Parameters: ``class_embedding (1, 1, C)``, ``patch_embedding`` Conv2d(3, C, 14, stride 14),
    ``position_embedding (1, 1 + G0 ** 2, C)`` with ``G0 = image_size // patch_size``.

    The G0 x G0 part of the position table is resized on every forward with bicubic
    interpolation (align_corners False, in float32, cast back) to the patch grid of the input;
    at the native size this is an exact identity.
    """

    def __init__(self, config: InternVisionConfig):
        super().__init__()
        self.config = config
        self.embed_dim = config.hidden_size
        self.image_size = config.image_size
        self.patch_size = config.patch_size
        self.class_embedding = nn.Parameter(torch.randn(1, 1, self.embed_dim))
        self.patch_embedding = nn.Conv2d(config.num_channels, self.embed_dim,
                                         kernel_size=self.patch_size, stride=self.patch_size)
        self.num_patches = (self.image_size // self.patch_size)**2
        self.num_positions = self.num_patches + 1
        self.position_embedding = nn.Parameter(
            torch.randn(1, self.num_positions, self.embed_dim))

    def interpolate_pos_embed(self, height: int, width: int) -> torch.Tensor:
        """Position table for a ``height x width`` patch grid.

        Returns: ``(1, 1 + height * width, C)`` in the parameter's dtype (CLS row unchanged,
        patch rows bicubic-resized from the ``G0 x G0`` stored grid, row-major).
        """
        table = self.position_embedding
        grid = self.image_size // self.patch_size
        cls_pos, patch_pos = table[:, :1], table[:, 1:]
        patch_pos = patch_pos.float().reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=(height, width), mode='bicubic',
                                  align_corners=False)
        patch_pos = patch_pos.reshape(1, -1, height * width).permute(0, 2, 1).to(table.dtype)
        return torch.cat([cls_pos, patch_pos], dim=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values ``(N, 3, H, W)`` float, ImageNet-normalised -> ``(N, 1 + h * w, C)``
        with ``h = H // 14``, ``w = W // 14``, in the patch-conv weight's dtype."""
        target_dtype = self.patch_embedding.weight.dtype
        patches = self.patch_embedding(pixel_values.to(target_dtype))  # (N, C, h, w)
        n, _, height, width = patches.shape
        patches = patches.flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(n, 1, -1).to(target_dtype)
        tokens = torch.cat([cls, patches], dim=1)
        return tokens + self.interpolate_pos_embed(height, width).to(target_dtype)


class InternAttention(nn.Module):
    """Multi-head self-attention with fused qkv and optional full-width q/k RMS norm.

    ``qkv`` Linear(C, 3C) lays out ``[q | k | v]``, head h owning channels ``h*d .. h*d+d-1``.
    With ``qk_normalization`` q and k are RMS-normalised over all C channels *before* the head
    split. Attention uses ``F.scaled_dot_product_attention`` (no mask, scale ``d ** -0.5``)
    unless the config asks for ``attn_implementation='eager'``.

    Shapes: ``(N, L, C)`` -> ``(N, L, C)``.
    """

    def __init__(self, config: InternVisionConfig):
        super().__init__()
        self.embed_dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(self.embed_dim, 3 * self.embed_dim, bias=config.qkv_bias)
        self.attn_drop = config.attention_dropout
        self.proj_drop = nn.Dropout(config.dropout)
        self.qk_normalization = config.qk_normalization
        if self.qk_normalization:
            self.q_norm = InternRMSNorm(self.embed_dim, eps=config.layer_norm_eps)
            self.k_norm = InternRMSNorm(self.embed_dim, eps=config.layer_norm_eps)
        self.proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.use_sdpa = get_attn_implementation(config) != 'eager'

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        n, length, channels = hidden_states.shape
        q, k, v = self.qkv(hidden_states).chunk(3, dim=-1)
        if self.qk_normalization:
            q = self.q_norm(q)
            k = self.k_norm(k)
        q, k, v = (t.reshape(n, length, self.num_heads, self.head_dim).transpose(1, 2)
                   for t in (q, k, v))
        dropout = self.attn_drop if self.training else 0.0
        if self.use_sdpa:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=self.scale)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            attn = F.dropout(attn.softmax(dim=-1), p=dropout, training=self.training)
            out = attn @ v
        out = out.transpose(1, 2).reshape(n, length, channels)
        return self.proj_drop(self.proj(out))


class InternMLP(nn.Module):
    """``fc1`` Linear(C, I) -> exact GELU -> ``fc2`` Linear(I, C). ``(N, L, C) -> (N, L, C)``."""

    def __init__(self, config: InternVisionConfig):
        super().__init__()
        self.act = nn.GELU()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class InternVisionEncoderLayer(nn.Module):
    """Pre-norm block with layer scale and drop path.

    ``x = x + drop_path1(ls1 * attn(norm1(x)))``; ``x = x + drop_path2(ls2 * mlp(norm2(x)))``.
    ``ls1``/``ls2`` are ``(C,)`` parameters initialised to ``initializer_factor``.

    Shapes: ``(N, L, C)`` -> ``(N, L, C)``.
    """

    def __init__(self, config: InternVisionConfig, drop_path_rate: float = 0.0):
        super().__init__()
        self.embed_dim = config.hidden_size
        self.attn = InternAttention(config)
        self.mlp = InternMLP(config)
        self.norm1 = build_norm(config.norm_type, self.embed_dim, config.layer_norm_eps)
        self.norm2 = build_norm(config.norm_type, self.embed_dim, config.layer_norm_eps)
        self.ls1 = nn.Parameter(config.initializer_factor * torch.ones(self.embed_dim))
        self.ls2 = nn.Parameter(config.initializer_factor * torch.ones(self.embed_dim))
        self.drop_path1 = DropPath(drop_path_rate)
        self.drop_path2 = DropPath(drop_path_rate)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.drop_path1(
            self.attn(self.norm1(hidden_states)) * self.ls1)
        hidden_states = hidden_states + self.drop_path2(
            self.mlp(self.norm2(hidden_states)) * self.ls2)
        return hidden_states


class InternVisionEncoder(nn.Module):
    """Stack of ``num_hidden_layers`` encoder layers; drop-path rate grows linearly from 0 at
    the first layer to ``drop_path_rate`` at the last. Supports gradient checkpointing (set by
    ``PreTrainedModel.gradient_checkpointing_enable``)."""

    def __init__(self, config: InternVisionConfig):
        super().__init__()
        self.config = config
        n = config.num_hidden_layers
        rates = [config.drop_path_rate * i / (n - 1) if n > 1 else 0.0 for i in range(n)]
        self.layers = nn.ModuleList(InternVisionEncoderLayer(config, rate) for rate in rates)
        self.gradient_checkpointing = False

    def forward(self,
                inputs_embeds: torch.Tensor,
                output_hidden_states: bool = False) -> BaseModelOutput:
        """inputs_embeds ``(N, L, C)`` -> ``last_hidden_state (N, L, C)``; ``hidden_states``
        (when asked) a tuple of L+1 tensors: input, then the output of each layer."""
        all_states = (inputs_embeds, ) if output_hidden_states else None
        hidden = inputs_embeds
        for layer in self.layers:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                hidden = self._gradient_checkpointing_func(layer.__call__, hidden)
            else:
                hidden = layer(hidden)
            if output_hidden_states:
                all_states = all_states + (hidden, )
        return BaseModelOutput(last_hidden_state=hidden, hidden_states=all_states)


class InternVisionPreTrainedModel(PreTrainedModel):
    """Weight init and transformers plumbing shared by the InternViT models."""

    config_class = InternVisionConfig
    main_input_name = 'pixel_values'
    base_model_prefix = 'vision_model'
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ['InternVisionEncoderLayer']

    def _init_weights(self, module: nn.Module) -> None:
        std = getattr(self.config, 'initializer_range', 0.02)
        factor = getattr(self.config, 'initializer_factor', 1.0)
        if isinstance(module, InternVisionEmbeddings):
            nn.init.trunc_normal_(module.position_embedding, std=std)
            nn.init.trunc_normal_(module.class_embedding, std=std)
        elif isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, InternRMSNorm):
            nn.init.ones_(module.weight)
        elif isinstance(module, InternVisionEncoderLayer):
            nn.init.constant_(module.ls1, factor)
            nn.init.constant_(module.ls2, factor)


class InternVisionModel(InternVisionPreTrainedModel):
    """The InternViT tower: ``embeddings`` + ``encoder`` (keys as in the official checkpoints).

    Forward: ``pixel_values (N, 3, H, W)`` float (ImageNet-normalised; H, W multiples of 14
    ideally, leftover pixels are dropped) -> ``BaseModelOutputWithPooling`` with
    ``last_hidden_state (N, 1 + h*w, C)`` (CLS at index 0), ``pooler_output (N, C)`` (the CLS
    token) and, with ``output_hidden_states``, ``hidden_states``: L+1 tensors ``(N, 1 + h*w, C)``.
    """

    def __init__(self, config: InternVisionConfig):
        super().__init__(config)
        self.config = config
        self.embeddings = InternVisionEmbeddings(config)
        self.encoder = InternVisionEncoder(config)
        self.post_init()

    def get_input_embeddings(self) -> InternVisionEmbeddings:
        return self.embeddings

    def forward(self,
                pixel_values: Optional[torch.Tensor] = None,
                output_hidden_states: Optional[bool] = None,
                return_dict: Optional[bool] = None,
                pixel_embeds: Optional[torch.Tensor] = None
                ) -> Union[Tuple, BaseModelOutputWithPooling]:
        output_hidden_states = bool(output_hidden_states)
        return_dict = return_dict if return_dict is not None else self.config.use_return_dict
        if pixel_embeds is not None:
            hidden = pixel_embeds
        elif pixel_values is not None:
            if pixel_values.dim() != 4:
                raise ValueError(f'pixel_values must be (N, 3, H, W), got {tuple(pixel_values.shape)}')
            hidden = self.embeddings(pixel_values)
        else:
            raise ValueError('InternVisionModel needs pixel_values or pixel_embeds')
        enc = self.encoder(hidden, output_hidden_states=output_hidden_states)
        last = enc.last_hidden_state
        if not return_dict:
            return (last, last[:, 0]) + ((enc.hidden_states, ) if output_hidden_states else ())
        return BaseModelOutputWithPooling(last_hidden_state=last, pooler_output=last[:, 0],
                                          hidden_states=enc.hidden_states)
