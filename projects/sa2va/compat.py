"""Library-version differences: the ONE place that looks at versions.

The project runs on two tested stacks (README "Install"):

* current: torch 2.14 + transformers 5 + mmengine 0.10.7 + peft;
* legacy (Sa2VA v1): torch 2.5.1 + transformers 4.48.0 + mmengine 0.10.6
  + xtuner 0.2.0.

Code elsewhere calls the functions below instead of testing versions
itself; each function says which versions differ and how. Keep this module
free of project imports (everything may import it).
"""
from __future__ import annotations

import functools
from importlib import metadata
from typing import Any, Optional, Tuple

__all__ = [
    'package_version', 'version_at_least', 'TORCH_LOAD_WEIGHTS_ONLY_DEFAULT',
    'dtype_kwargs', 'get_attn_implementation', 'set_attn_implementation',
    'tokenizer_class_name',
]


def _parse(version: str) -> Tuple[int, ...]:
    """``'2.14.1+cu130'`` -> ``(2, 14, 1)``; ``'5.0.0rc1'`` -> ``(5, 0, 0)``."""
    parts = []
    for piece in version.split('+', 1)[0].split('.')[:3]:
        digits = ''
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        parts.append(int(digits or 0))
    return tuple(parts)


@functools.lru_cache(maxsize=None)
def package_version(package: str) -> Optional[Tuple[int, ...]]:
    """Installed version of a distribution as ``(major, minor, patch)``;
    None if it is not installed."""
    try:
        return _parse(metadata.version(package))
    except metadata.PackageNotFoundError:
        return None


def version_at_least(package: str, version: str) -> bool:
    """True if ``package`` is installed at ``version`` or newer."""
    have = package_version(package)
    return have is not None and have >= _parse(version)


# -- torch -----------------------------------------------------------------

#: torch >= 2.6 loads with ``weights_only=True`` unless told otherwise; every
#: load in the project passes ``weights_only=True`` explicitly, which works on
#: both stacks (the flag exists since torch 1.13).
TORCH_LOAD_WEIGHTS_ONLY_DEFAULT = version_at_least('torch', '2.6')


# -- transformers: model loading -------------------------------------------

def dtype_kwargs(dtype: Any) -> dict:
    """The ``from_pretrained`` keyword for the parameter dtype.

    transformers >= 4.56 takes ``dtype=`` (``torch_dtype=`` is deprecated and
    logs a warning on 5.x); older ones only know ``torch_dtype=``.

    Args:
        dtype: a torch dtype, ``'auto'`` or None (None gives ``{}``).
    """
    if dtype is None:
        return {}
    key = 'dtype' if version_at_least('transformers', '4.56') else 'torch_dtype'
    return {key: dtype}


def get_attn_implementation(config) -> Optional[str]:
    """The attention implementation a config asked for (``'sdpa'``,
    ``'eager'`` ...), None if it left the choice to transformers.

    transformers 4.48 and 5.x both keep the request in
    ``config._attn_implementation_internal``; the public property
    ``_attn_implementation`` fills in a default on 4.x, so read the field.
    """
    return getattr(config, '_attn_implementation_internal', None)


def set_attn_implementation(config, implementation: Optional[str]) -> None:
    """Ask a built config for ``implementation`` (see
    :func:`get_attn_implementation`)."""
    config._attn_implementation_internal = implementation


# -- transformers: tokenizers ----------------------------------------------

def tokenizer_class_name(tokenizer) -> str:
    """The tokenizer's class name as transformers 4 spells it.

    transformers 5 has one tokenizer class per model backed by ``tokenizers``
    (``Qwen2Tokenizer``; ``Qwen2TokenizerFast`` is an alias of it), where 4.x
    had a slow class and a ``...Fast`` class. Rules written against 4.x class
    names (xtuner's BOS/EOS table) keep their meaning with this name: a fast
    (Rust-backed) tokenizer answers ``<Name>Fast``.
    """
    name = type(tokenizer).__name__
    if getattr(tokenizer, 'is_fast', False) and not name.endswith('Fast'):
        return name + 'Fast'
    return name
