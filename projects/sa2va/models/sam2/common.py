"""Small layers shared by the SAM2 components.

Every module here keeps the attribute names that give the official SAM2
state-dict keys (``layers.{k}`` for MLPs, ``weight`` / ``bias`` for
:class:`LayerNorm2d`).
"""
from typing import Callable, Optional, Tuple, Type

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS = {'relu': nn.ReLU, 'gelu': nn.GELU}


def get_activation(activation) -> Type[nn.Module]:
    """Map ``'relu'`` / ``'gelu'`` (the yaml spelling) or a module class to a
    module class. Raises ``ValueError`` for an unknown name."""
    if isinstance(activation, str):
        if activation.lower() not in ACTIVATIONS:
            raise ValueError(f'unknown activation {activation!r}; '
                             f'expected one of {sorted(ACTIVATIONS)}')
        return ACTIVATIONS[activation.lower()]
    return activation


class MLP(nn.Module):
    """``num_layers`` Linear layers (``layers.{k}``) with an activation
    between them and optionally a sigmoid on the output.

    Input ``(..., input_dim)`` float, output ``(..., output_dim)`` in the
    input dtype (or the autocast dtype).
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int,
                 num_layers: int, activation: Type[nn.Module] = nn.ReLU,
                 sigmoid_output: bool = False) -> None:
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.num_layers = num_layers
        self.layers = nn.ModuleList(
            nn.Linear(i, o) for i, o in zip(dims_in, dims_out))
        self.act = activation()
        self.sigmoid_output = sigmoid_output

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.num_layers - 1:
                x = self.act(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dim of a ``(B, C, H, W)`` map (biased
    variance, ``eps`` inside the square root), with per-channel affine."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth: zero whole samples of ``x`` (dim 0) with
    probability ``p`` in training and rescale the rest by ``1 / (1 - p)``."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - p)
    return x * keep / (1 - p)


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """``(B, N, heads*d) -> (B, heads, N, d)``."""
    b, n, c = x.shape
    return x.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """``(B, heads, N, d) -> (B, N, heads*d)``."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def sdpa(q: Tensor, k: Tensor, v: Tensor, dropout_p: float = 0.0) -> Tensor:
    """Softmax attention ``softmax(q k^T / sqrt(d)) v`` through
    :func:`torch.nn.functional.scaled_dot_product_attention`.

    q ``(..., Nq, d)``, k / v ``(..., Nk, d)``; returns ``(..., Nq, d)``.
    """
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)


def bhwc_max_pool(x: Tensor, stride: Optional[Tuple[int, int]]) -> Tensor:
    """Max-pool a channels-last ``(B, H, W, C)`` map with kernel = stride;
    ``stride=None`` returns ``x`` unchanged."""
    if stride is None:
        return x
    x = F.max_pool2d(x.permute(0, 3, 1, 2), kernel_size=stride, stride=stride)
    return x.permute(0, 2, 3, 1)


def check_kwargs(fn: Callable, cfg: dict, where: str) -> dict:
    """Return ``cfg`` without ``_target_`` after checking every key is a
    parameter of ``fn``; raises ``ValueError`` naming unknown keys."""
    import inspect
    cfg = {k: v for k, v in cfg.items() if k != '_target_'}
    params = inspect.signature(fn).parameters
    unknown = sorted(k for k in cfg if k not in params)
    if unknown:
        raise ValueError(f'{where}: unknown config key(s) {unknown}; '
                         f'known: {sorted(params)}')
    return cfg
