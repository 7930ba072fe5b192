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

The Qwen-VL based releases (``ByteDance/Sa2VA-Qwen2_5-VL-3B/7B``,
``Sa2VA-Qwen3-VL-4B``; official ``Sa2VAChatModelQwen``, newest Sa2VA
``projects/sa2va/hf/models_qwen2_5_vl`` / ``models_qwen3vl``) hold the whole
transformers ``*ForConditionalGeneration`` as the submodule ``model``
(``model.model.visual.*``, ``model.model.language_model.*``,
``model.lm_head.*``, the names of transformers >= 4.52, which the official
training and conversion code needs), the same ``grounding_encoder.sam2_model.*``
and ``text_hidden_fcs.*``; ``config.json`` is the Qwen-VL config (nested
``text_config`` / ``vision_config``) with ``model_type`` ``sa2va_chat``,
``architectures`` ``['Sa2VAChatModelQwen']`` and ``template``. The project's
``QwenVLChat`` keeps the transformers model as ``mllm.model``, so each key
maps by one prefix. Both Qwen backbones share ``model_type`` and
``architectures``; ``text_config.model_type`` tells them apart.

Another released family is added by one more entry of :data:`HF_LAYOUTS`:
its ``architectures``, ``auto_map``, prefix pairs and leaf renames.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from typing import Any, Dict, Optional, Tuple

__all__ = ['HF_LAYOUTS', 'HFLayout', 'layout_of', 'layout_for_model', 'read_hf_config',
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
        name: the layout's name (a key of :data:`HF_LAYOUTS`; also the
            ``config.json`` ``model_type`` unless ``model_type`` is given).
        architectures: ``config.json`` ``architectures``.
        auto_map: ``config.json`` ``auto_map`` (class paths of the official
            modelling files shipped next to it).
        prefixes: ``(official prefix, project prefix)`` pairs; every key
            has exactly one matching prefix on each side.
        leaf_renames: ``(official prefix, official leaf, project leaf)``:
            the last name component renamed under that prefix.
        sam2_preset: the SAM2 the official code always builds (its config
            has no SAM2 section).
        model_type: ``config.json`` ``model_type`` (default ``name``).
        family: ``'internvl'`` (``InternVLChat``, ``llm_config``) or
            ``'qwen_vl'`` (``QwenVLChat``, ``text_config``).
        backbone: the transformers ``model_type`` of a Qwen-VL family
            (``qwen2_5_vl`` / ``qwen3_vl``); its ``text_config.model_type``
            is ``backbone + '_text'``.
    """

    def __init__(self, name: str, architectures, auto_map: Dict[str, str],
                 prefixes, leaf_renames=(), sam2_preset: str = 'sam2_hiera_l',
                 model_type: Optional[str] = None, family: str = 'internvl',
                 backbone: Optional[str] = None):
        if family not in ('internvl', 'qwen_vl'):
            raise ValueError(f'unknown layout family {family!r}')
        if (family == 'qwen_vl') != (backbone is not None):
            raise ValueError('a qwen_vl layout names its backbone (and only it)')
        self.name = name
        self.model_type = model_type or name
        self.family = family
        self.backbone = backbone
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

    def canonical(self, file_key: str) -> str:
        """A key as a file stores it -> the layout's official key. Qwen-VL
        layouts accept the transformers < 4.52 names of the wrapped
        ``*ForConditionalGeneration`` (``model.visual.*``,
        ``model.model.layers.*``; :func:`projects.sa2va.compat.
        qwen_vl_current_key`); other keys are returned as they are."""
        if self.family == 'qwen_vl' and file_key.startswith('model.'):
            from ..compat import qwen_vl_current_key
            return 'model.' + qwen_vl_current_key(file_key[len('model.'):])
        return file_key

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
#: official ``auto_map`` of the Qwen-VL releases (files of
#: ``projects/sa2va/hf/models_qwen2_5_vl`` / ``models_qwen3vl``)
_QWEN_AUTO_MAP = {'AutoConfig': 'configuration_sa2va_chat.Sa2VAChatConfigQwen',
                  'AutoModel': 'modeling_sa2va_qwen.Sa2VAChatModelQwen',
                  'AutoModelForCausalLM': 'modeling_sa2va_qwen.Sa2VAChatModelQwen'}
#: official prefix -> QwenVLChat's merged key prefix (``mllm.model`` is the
#: transformers model, the official ``Sa2VAChatModelQwen.model``)
_QWEN_PREFIXES = (('model.model.visual.', 'mllm.model.model.visual.'),
                  ('model.model.language_model.', 'mllm.model.model.language_model.'),
                  ('model.lm_head.', 'mllm.model.lm_head.'),
                  ('grounding_encoder.sam2_model.', 'grounding_encoder.'),
                  ('text_hidden_fcs.', 'text_hidden_fcs.'))
for _backbone in ('qwen2_5_vl', 'qwen3_vl'):
    # Sa2VA-Qwen2_5-VL-3B/7B and Sa2VA-Qwen3-VL-2B/4B
    HF_LAYOUTS[f'sa2va_{_backbone}'] = HFLayout(
        name=f'sa2va_{_backbone}', model_type='sa2va_chat', family='qwen_vl',
        backbone=_backbone, architectures=['Sa2VAChatModelQwen'],
        auto_map=_QWEN_AUTO_MAP, prefixes=_QWEN_PREFIXES,
        leaf_renames=HF_LAYOUTS['sa2va_chat'].leaf_renames)

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
    """The layout of a released ``config.json`` dict (by ``model_type``,
    ``architectures`` and, for Qwen-VL, ``text_config.model_type``)."""
    hits = [lay for lay in HF_LAYOUTS.values()
            if lay.model_type == config.get('model_type')
            and list(config.get('architectures') or []) == lay.architectures]
    if not hits:
        raise ValueError(f'{where}: model_type {config.get("model_type")!r} / '
                         f'architectures {config.get("architectures")} is not a known Sa2VA '
                         f'release layout ({sorted(HF_LAYOUTS)})')
    if hits[0].family == 'internvl':
        return hits[0]
    text_type = (config.get('text_config') or {}).get('model_type')
    for lay in hits:
        if text_type == f'{lay.backbone}_text':
            return lay
    raise ValueError(f'{where}: text_config.model_type {text_type!r} is none of the '
                     f'Sa2VA-Qwen backbones ({[f"{h.backbone}_text" for h in hits]})')


def layout_for_model(model) -> HFLayout:
    """The layout a built ``Sa2VAModel`` exports to: a ``QwenVLChat`` MLLM
    -> its backbone's Qwen layout, else ``sa2va_chat``."""
    backbone = getattr(model.mllm, 'model_type', None)
    if type(model.mllm).__name__ == 'QwenVLChat':
        for lay in HF_LAYOUTS.values():
            if lay.backbone == backbone:
                return lay
        raise ValueError(f'no Hugging Face layout for the Qwen-VL backbone {backbone!r}')
    return HF_LAYOUTS['sa2va_chat']


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
    if layout.family == 'qwen_vl':
        from .qwen_vl import check_qwen_vl_config
        check_qwen_vl_config(cfg, path)
        return cfg, layout
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
