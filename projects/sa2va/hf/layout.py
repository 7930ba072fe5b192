"""The released Hugging Face Sa2VA layout, as data: key prefixes, renames,
``config.json`` fields and template names.

A released Sa2VA directory (``ByteDance/Sa2VA-1B/4B/8B/26B``, the
Sa2VA-InternVL3 models) holds the merged model under the official key names
(``vision_model.*``, ``mlp1.*``, ``language_model.*``,
``grounding_encoder.sam2_model.*``, ``text_hidden_fcs.*``); the project's
training model (``Sa2VAModel``, merged keys as in
``projects.sa2va.evaluation.export.merged_key``) names the same tensors
``mllm.vision_model.*``, ``mllm.mlp1.*``, ``mllm.language_model.*``,
``grounding_encoder.*``, ``text_hidden_fcs.*``. The one rename inside a
prefix is SAM2's layer scale ``gamma``, stored as ``g_weight`` because
transformers rewrites keys containing ``gamma`` when it loads a checkpoint.

Another released family (e.g. the Qwen-VL based Sa2VA models) is added by
one more entry of :data:`HF_LAYOUTS`: its ``architectures``, ``auto_map``,
prefix pairs and leaf renames.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from typing import Any, Dict, Optional, Tuple

__all__ = ['HF_LAYOUTS', 'HFLayout', 'layout_of', 'read_hf_config',
           'OFFICIAL_TEMPLATES', 'template_from_official', 'template_to_official',
           'SA2VA_HF_CONFIG_EXTRA']

#: ``config.json`` key where an export by this project records what the
#: official format cannot hold (the SAM2 build dict and the Sa2VA token
#: list). The official configuration class keeps unknown keys as plain
#: attributes, so the file still loads with the official code.
SA2VA_HF_CONFIG_EXTRA = 'sa2va_training'


class HFLayout:
    """One released model family.

    Args:
        name: the family's name (the ``config.json`` ``model_type``).
        architectures: ``config.json`` ``architectures``.
        auto_map: ``config.json`` ``auto_map`` (class paths of the official
            modelling files shipped next to it).
        prefixes: ``(official prefix, project prefix)`` pairs; every key
            has exactly one matching prefix on each side.
        leaf_renames: ``(official prefix, official leaf, project leaf)``:
            the last name component renamed under that prefix.
        sam2_preset: the SAM2 the official code always builds (its config
            has no SAM2 section).
    """

    def __init__(self, name: str, architectures, auto_map: Dict[str, str],
                 prefixes, leaf_renames=(), sam2_preset: str = 'sam2_hiera_l'):
        self.name = name
        self.architectures = list(architectures)
        self.auto_map = dict(auto_map)
        self.prefixes = tuple(tuple(p) for p in prefixes)
        self.leaf_renames = tuple(tuple(r) for r in leaf_renames)
        self.sam2_preset = sam2_preset

    @staticmethod
    def _swap(key: str, pairs, src: int, where: str) -> Tuple[str, str, str]:
        hits = [p for p in pairs if key.startswith(p[src])]
        if len(hits) != 1:
            raise KeyError(f'{where} key {key!r} matches {len(hits)} prefixes of the '
                           f'layout (known: {[p[src] for p in pairs]})')
        a, b = hits[0][src], hits[0][1 - src]
        return a, b, key[len(a):]

    def to_project(self, key: str) -> str:
        """Official key -> the project's merged key (``KeyError`` naming it
        when no prefix of the layout matches)."""
        a, b, rest = self._swap(key, self.prefixes, 0, 'official')
        for prefix, official, project in self.leaf_renames:
            if key.startswith(prefix) and rest.rsplit('.', 1)[-1] == official:
                rest = rest[:-len(official)] + project
        return b + rest

    def to_official(self, key: str) -> str:
        """The project's merged key -> official key (the inverse of
        :meth:`to_project`)."""
        a, b, rest = self._swap(key, self.prefixes, 1, 'project')
        out = b + rest
        for prefix, official, project in self.leaf_renames:
            if out.startswith(prefix) and rest.rsplit('.', 1)[-1] == project:
                out = out[:-len(project)] + official
        return out


HF_LAYOUTS: Dict[str, HFLayout] = {
    # Sa2VA-1B/4B/8B/26B (InternVL2.5) and Sa2VA-InternVL3-2B/8B/14B
    'sa2va_chat': HFLayout(
        name='sa2va_chat',
        architectures=['Sa2VAChatModel'],
        auto_map={'AutoConfig': 'configuration_sa2va_chat.Sa2VAChatConfig',
                  'AutoModel': 'modeling_sa2va_chat.Sa2VAChatModel',
                  'AutoModelForCausalLM': 'modeling_sa2va_chat.Sa2VAChatModel'},
        prefixes=(('vision_model.', 'mllm.vision_model.'),
                  ('mlp1.', 'mllm.mlp1.'),
                  ('language_model.', 'mllm.language_model.'),
                  ('grounding_encoder.sam2_model.', 'grounding_encoder.'),
                  ('text_hidden_fcs.', 'text_hidden_fcs.')),
        leaf_renames=(('grounding_encoder.sam2_model.memory_encoder.fuser.',
                       'g_weight', 'gamma'),)),
}

#: LLM classes the official code builds from ``llm_config.architectures[0]``.
OFFICIAL_LLM_ARCHITECTURES = ('Qwen2ForCausalLM', 'InternLM2ForCausalLM',
                              'LlamaForCausalLM', 'Phi3ForCausalLM',
                              'Qwen3ForCausalLM')  # Qwen3: newest official code

#: Template names of the released models (official ``templates.py``, the
#: xtuner names): Sa2VA-1B ``qwen_chat``, -4B ``phi3_chat``, -8B/26B
#: ``internlm2_chat``.
OFFICIAL_TEMPLATES = ('qwen_chat', 'phi3_chat', 'internlm2_chat')
#: project template name -> the official name of the same prompt form
_PROJECT_TO_OFFICIAL = {'internvl2_5': 'qwen_chat'}


def template_from_official(name: str) -> str:
    """The project's template name for an official ``config.json``
    ``template`` (the same xtuner name)."""
    if name not in OFFICIAL_TEMPLATES:
        raise ValueError(f'config.json template {name!r} is not one of the '
                         f'released Sa2VA templates {OFFICIAL_TEMPLATES}')
    return name


def template_to_official(template) -> str:
    """An official template name for the project's ``template`` setting.

    Raises:
        ValueError: a template dict, or a name the official code does not
        know (the official inference builds every prompt from this name).
    """
    if not isinstance(template, str):
        raise ValueError('the Hub layout names its chat template: give the export a '
                         f'template name out of {OFFICIAL_TEMPLATES}, not a dict')
    name = _PROJECT_TO_OFFICIAL.get(template, template)
    if name not in OFFICIAL_TEMPLATES:
        raise ValueError(f'template {template!r} has no official Sa2VA name; use one '
                         f'of {OFFICIAL_TEMPLATES}')
    return name


def layout_of(config: Dict[str, Any], where: str = 'config.json') -> HFLayout:
    """The layout of a released ``config.json`` dict (by ``model_type`` and
    ``architectures``)."""
    layout = HF_LAYOUTS.get(config.get('model_type'))
    if layout is None or list(config.get('architectures') or []) != layout.architectures:
        raise ValueError(f'{where}: model_type {config.get("model_type")!r} / '
                         f'architectures {config.get("architectures")} is not a known Sa2VA '
                         f'release layout ({sorted(HF_LAYOUTS)})')
    return layout


def read_hf_config(hf_dir: str) -> Tuple[Dict[str, Any], HFLayout]:
    """``config.json`` of a released (or exported) Sa2VA directory, checked.

    Returns:
        ``(config dict, layout)``.

    Raises:
        FileNotFoundError: no ``config.json``.
        ValueError: unknown layout, an LLM class the official code refuses,
        LoRA flags that are not 0, or a missing field (named).
    """
    path = osp.join(os.fspath(hf_dir), 'config.json')
    if not osp.isfile(path):
        raise FileNotFoundError(f'{hf_dir}: no config.json (not a Hugging Face '
                                f'Sa2VA directory)')
    with open(path, encoding='utf-8') as f:
        cfg = json.load(f)
    layout = layout_of(cfg, path)
    for key in ('vision_config', 'llm_config', 'template', 'downsample_ratio'):
        if key not in cfg:
            raise ValueError(f'{path}: missing field {key!r}')
    arch = (cfg['llm_config'].get('architectures') or [None])[0]
    if arch not in OFFICIAL_LLM_ARCHITECTURES:
        raise ValueError(f'{path}: llm_config.architectures[0] {arch!r} is not one of '
                         f'{OFFICIAL_LLM_ARCHITECTURES}')
    for key in ('use_llm_lora', 'use_backbone_lora'):
        if cfg.get(key, 0):
            raise ValueError(f'{path}: {key}={cfg[key]}: the official code would wrap '
                             f'fresh LoRA adapters at load time; a merged release has 0')
    return cfg, layout


def internvl_config_from_hf(cfg: Dict[str, Any], hf_dir: Optional[str] = None
                            ) -> Dict[str, Any]:
    """The ``InternVLChatConfig`` dict (``mllm.config``) of a released
    ``config.json``: its vision / LLM configs and InternVL fields; the
    Sa2VA-only fields (``auto_map``, the extra section) are left out.
    ``hf_dir`` is recorded as ``_name_or_path`` (an InternLM2 LLM's code is
    read from there)."""
    fields = ('vision_config', 'llm_config', 'select_layer', 'force_image_size',
              'downsample_ratio', 'template', 'dynamic_image_size', 'use_thumbnail',
              'ps_version', 'min_dynamic_patch', 'max_dynamic_patch')
    out = {k: cfg[k] for k in fields if k in cfg}
    out['llm_config'] = dict(cfg['llm_config'])
    out['vision_config'] = dict(cfg['vision_config'])
    for sub in (out['llm_config'], out['vision_config']):
        for private in ('_attn_implementation_autoset', 'transformers_version',
                        '_name_or_path'):
            sub.pop(private, None)
    if hf_dir is not None:
        out['name_or_path'] = os.fspath(hf_dir)
    out['architectures'] = ['InternVLChatModel']
    return out
