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
import inspect
from importlib import metadata
from typing import Any, Optional, Tuple

__all__ = [
    'package_version', 'version_at_least', 'TORCH_LOAD_WEIGHTS_ONLY_DEFAULT',
    'dtype_kwargs', 'get_attn_implementation', 'set_attn_implementation',
    'tokenizer_class_name', 'TIES_WEIGHTS_PER_SUBMODEL', 'cache_kwargs',
    'enable_activation_checkpointing', 'qwen_vl_current_key', 'rope_fields_for_4x',
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


#: transformers 5 ties weights per sub-model, each by its own config's
#: ``tie_word_embeddings`` (``PreTrainedModel.tie_weights(missing_keys=None,
#: recompute_mapping=True)``); 4.x ties by the top model's config, so a
#: composite model overrides ``tie_weights()`` to defer to its LLM.
TIES_WEIGHTS_PER_SUBMODEL = version_at_least('transformers', '5')


def get_attn_implementation(config) -> Optional[str]:
    """The attention implementation a config asked for (``'sdpa'``,
    ``'eager'`` ...), None if it left the choice to transformers.

    transformers 4.48 and 5.x both keep the request in
    ``config._attn_implementation_internal``; the public property
    ``_attn_implementation`` fills in a default on 4.x, so read the field.
    """
    return getattr(config, '_attn_implementation_internal', None)


def set_attn_implementation(config, implementation: Optional[str]) -> None:
    """Ask a config and, recursively, its ``sub_configs`` (a composite
    config's vision / LLM configs) for ``implementation``.

    transformers 4.48 hands the top config's request down to the sub-configs
    when the top model is built; 5.x does so only in its config setter, which
    runs before a composite config has built its sub-configs. Setting the
    field on every level explicitly gives the same result on both.
    """
    config._attn_implementation_internal = implementation
    for key in getattr(config, 'sub_configs', None) or {}:
        sub = getattr(config, key, None)
        if sub is not None and hasattr(sub, 'to_dict'):
            set_attn_implementation(sub, implementation)


# -- transformers: KV cache, checkpointing ---------------------------------

@functools.lru_cache(maxsize=None)
def _cache_kwarg_of(model_class) -> str:
    params = inspect.signature(model_class.forward).parameters
    return 'cache' if 'cache' in params else 'past_key_values'


def cache_kwargs(model, cache) -> dict:
    """The ``forward`` keyword that carries the KV cache into ``model``.

    transformers 5.2x renamed ``past_key_values`` to ``cache`` in its model
    classes (the old name warns until 5.40); 4.x classes and remote code
    (InternLM2) take ``past_key_values``. Read from the class's signature (a
    peft wrapper is looked through). None gives ``{}``.
    """
    if cache is None:
        return {}
    base = model.get_base_model() if hasattr(model, 'get_base_model') else model
    return {_cache_kwarg_of(type(base)): cache}


def enable_activation_checkpointing(model, use_reentrant: bool = False) -> None:
    """Turn on gradient (activation) checkpointing of a transformers model.

    transformers 5 calls it ``activation_checkpointing_enable``
    (``gradient_checkpointing_enable`` warns, removed in v6); 4.x only has
    ``gradient_checkpointing_enable``.
    """
    kwargs = {'use_reentrant': use_reentrant}
    if hasattr(model, 'activation_checkpointing_enable'):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


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


def save_tokenizer_files(tokenizer, directory: str) -> None:
    """``tokenizer.save_pretrained(directory)`` plus ``added_tokens.json``
    (``{token: id}`` of the tokens above the base vocabulary), which
    transformers 4 writes and 5 no longer does; the released Sa2VA layout
    lists the Sa2VA tokens there (transformers 4 readers load it)."""
    import json
    import os.path as osp
    tokenizer.save_pretrained(directory)
    path = osp.join(directory, 'added_tokens.json')
    if osp.exists(path):
        return
    base = tokenizer.vocab_size
    added = {t: i for t, i in sorted(tokenizer.get_added_vocab().items(),
                                     key=lambda kv: kv[1]) if i >= base}
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(added, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write('\n')


def qwen_vl_current_key(key: str) -> str:
    """A Qwen2.5-VL / Qwen3-VL ``*ForConditionalGeneration`` state-dict key
    under the names of transformers >= 4.52 (and 5.x): ``model.visual.*``,
    ``model.language_model.*``, ``lm_head.*``.

    Checkpoints written before 4.52 (the ``Qwen/Qwen2.5-VL-*-Instruct``
    safetensors) say ``visual.*`` and ``model.layers.*`` /
    ``model.embed_tokens.*`` / ``model.norm.*``; transformers renames them
    when it loads such a checkpoint, as this function does. Current names
    are returned unchanged.
    """
    if key.startswith('visual.'):
        return 'model.' + key
    if key.startswith('model.') and not key.startswith(('model.visual.',
                                                         'model.language_model.')):
        return 'model.language_model.' + key[len('model.'):]
    return key


def rope_fields_for_4x(text_config: dict) -> dict:
    """A Qwen-VL ``text_config`` dict (as transformers 5 writes it: rotary
    settings in ``rope_parameters``) plus the fields transformers 4.x reads
    (``rope_theta`` and ``rope_scaling`` with ``mrope_section``), so that a
    ``config.json`` written here loads in the official Sa2VA code (pinned to
    transformers 4.57). transformers 5 reads both forms; a dict that already
    has the 4.x fields is returned as it is."""
    out = dict(text_config)
    rope = out.get('rope_parameters')
    if isinstance(rope, dict) and 'rope_scaling' not in out:
        scaling = {k: v for k, v in rope.items() if k != 'rope_theta'}
        out['rope_scaling'] = dict(scaling, type=scaling.get('rope_type', 'default'))
        if 'rope_theta' in rope:
            out.setdefault('rope_theta', rope['rope_theta'])
    return out
