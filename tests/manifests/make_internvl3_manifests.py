"""Write the key/shape manifests of InternVL3-2B/8B and InternVL3.5-4B/8B (``internvl3/*.json``).

How each manifest is derived (independent of this project's ``InternVLChat``):

* ``config``: the fields of the official ``config.json`` (OpenGVLab/InternVL model zoo and
  fine-tuning scripts ``internvl_chat/shell/internvl3.0/2nd_finetune/*.sh``,
  ``internvl_chat_gpt_oss/shell/internvl3_5_qwen3/*_sft.sh``: template ``internvl2_5``,
  ``ps_version`` v2, ``select_layer`` -1, 448 px tiles, ``downsample_ratio`` 0.5, dynamic
  tiling 1..12 with thumbnail) and the public ``config.json`` of each language model
  (Qwen2.5-1.5B / 7B, Qwen3-4B / 8B); ``SOURCES`` below names them.
* ``vision_model.*``: copied from the shared InternVL2.5-4B manifest
  (``shared/fixtures/internvl/manifests`` beside the repository), built by the reference code; InternVL3 and
  InternVL3.5 (1B-14B) use the same InternViT-300M-448px-V2_5 tower.
* ``mlp1.*``: LayerNorm(4C) + Linear(4C, D) + Linear(D, D) (same projector in the InternVL3 and
  InternVL3.5 reference modelling code).
* ``language_model.*``: transformers' own ``Qwen2ForCausalLM`` / ``Qwen3ForCausalLM`` built on
  the meta device from ``llm_config`` (needs transformers >= 4.51 for Qwen3).

``sa2va_hf/Sa2VA-InternVL3-8B.json`` (the released ByteDance/Sa2VA-InternVL3-8B, issue 13's
key layout): ``vision_model.*`` / ``mlp1.*`` as above, ``language_model.*`` from the
InternVL3-8B LLM with vocab_size + 5 (``[SEG]``, ``<p>``, ``</p>``, ``<vp>``, ``</vp>``),
``grounding_encoder.sam2_model.*`` copied from the shared Sa2VA-4B manifest (the same SAM2
Hiera-L, ``gamma`` stored as ``g_weight``) and ``text_hidden_fcs`` Linear(D, D) + Linear(D, 256).
Template ``qwen_chat``: the newest Sa2VA ``tools/convert_to_hf.py`` writes the training
config's template (``sa2va_in30_*.py``: qwen_chat) into ``config.json``.

Run with the current environment from the repository root::

    .venv-current/bin/python tests/manifests/make_internvl3_manifests.py
"""
import json
import os
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get('SA2VA_SHARED_DIR', HERE.parents[2] / 'shared'), 'fixtures')
SHARED_VIT = SHARED / 'internvl' / 'manifests' / 'InternVL2_5-4B.json'
SHARED_SA2VA = SHARED / 'sa2va_hf' / 'manifests' / 'Sa2VA-4B.json'
SA2VA_TOKENS = ['[SEG]', '<p>', '</p>', '<vp>', '</vp>']

COMMON = dict(downsample_ratio=0.5, ps_version='v2', select_layer=-1, template='internvl2_5',
              force_image_size=448, dynamic_image_size=True, use_thumbnail=True,
              min_dynamic_patch=1, max_dynamic_patch=12)
QWEN25 = dict(architectures=['Qwen2ForCausalLM'], model_type='qwen2', hidden_act='silu',
              rms_norm_eps=1e-6, rope_theta=1000000.0, max_position_embeddings=32768,
              vocab_size=151674, tie_word_embeddings=False)
QWEN3 = dict(architectures=['Qwen3ForCausalLM'], model_type='qwen3', hidden_act='silu',
             rms_norm_eps=1e-6, rope_theta=1000000.0, max_position_embeddings=40960,
             head_dim=128, attention_bias=False, vocab_size=151678, tie_word_embeddings=False)
MODELS = {
    'InternVL3-2B': dict(llm='Qwen/Qwen2.5-1.5B', llm_config=dict(
        QWEN25, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
        num_attention_heads=12, num_key_value_heads=2)),
    'InternVL3-8B': dict(llm='Qwen/Qwen2.5-7B', llm_config=dict(
        QWEN25, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
        num_attention_heads=28, num_key_value_heads=4)),
    'InternVL3_5-4B': dict(llm='Qwen/Qwen3-4B', llm_config=dict(
        QWEN3, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
        num_attention_heads=32, num_key_value_heads=8)),
    'InternVL3_5-8B': dict(llm='Qwen/Qwen3-8B', llm_config=dict(
        QWEN3, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
        num_attention_heads=32, num_key_value_heads=8)),
}
SOURCES = {
    'vision/mlp1/template/tiling': 'OpenGVLab/InternVL README model zoo (vision part '
                                   'InternViT-300M-448px-V2_5 for InternVL3-1B..14B; 0.3B vision '
                                   'for InternVL3.5-1B..14B) and the fine-tuning scripts named '
                                   'in the module docstring',
    'llm widths': 'public config.json of Qwen2.5-1.5B / Qwen2.5-7B / Qwen3-4B / Qwen3-8B',
    'tie_word_embeddings': 'False: InternVL3 configuration_internvl_chat.py forces it; for '
                           'InternVL3.5 the model zoo language sizes (4B: 4.4B, 2B: 2.0B, '
                           '1B: 0.8B) count a separate lm_head',
    'vocab_size': 'len(tokenizer) after the 9 InternVL tokens (<img> ... </box>) that '
                  'internvl_chat_finetune.py adds and resizes to: Qwen2.5 151665 + 9 = 151674 '
                  '(as InternVL2.5-4B), Qwen3 151669 + 9 = 151678',
}
UNVERIFIED = ['InternVL3.5 vocab_size 151678 and max_position_embeddings 40960 are derived, not '
              'read from the released config.json (no model hub access); only the '
              'embedding / lm_head row count depends on vocab_size']


def llm_shapes(llm_config):
    from transformers import AutoConfig, AutoModelForCausalLM
    fields = {k: v for k, v in llm_config.items() if k not in ('model_type', 'architectures')}
    config = AutoConfig.for_model(llm_config['model_type'], **fields)
    with torch.device('meta'):
        model = AutoModelForCausalLM.from_config(config)
    return {f'language_model.{k}': list(v.shape) for k, v in model.state_dict().items()}


def main():
    vit = json.loads(SHARED_VIT.read_text())
    vit_params = {k: v for k, v in vit['params'].items() if k.startswith('vision_model.')}
    c = vit['vision_config']['hidden_size'] * 4
    for name, spec in MODELS.items():
        d = spec['llm_config']['hidden_size']
        params = dict(vit_params)
        params.update({'mlp1.0.weight': [c], 'mlp1.0.bias': [c], 'mlp1.1.weight': [d, c],
                       'mlp1.1.bias': [d], 'mlp1.3.weight': [d, d], 'mlp1.3.bias': [d]})
        params.update(llm_shapes(spec['llm_config']))
        counts = _counts(params)
        manifest = dict(model=name, hf_repo=f'OpenGVLab/{name}',
                        vision_tower='InternViT-300M-448px-V2_5', language_model=spec['llm'],
                        vision_config=vit['vision_config'], llm_config=spec['llm_config'],
                        **COMMON, num_tensors=len(params), param_counts=counts,
                        total_params=sum(counts.values()), sources=SOURCES,
                        unverified=UNVERIFIED if 'InternVL3_5' in name else [],
                        params=params)
        write_manifest('internvl3', manifest)
    sa2va_manifest('InternVL3-8B', 'Sa2VA-InternVL3-8B')


def _counts(params):
    counts = {}
    for key, shape in params.items():
        part = key.split('.', 1)[0]
        counts[part] = counts.get(part, 0) + int(torch.Size(shape).numel())
    return counts


def sa2va_manifest(base_name, name):
    internvl = json.loads((HERE / 'internvl3' / f'{base_name}.json').read_text())
    sam2 = json.loads(SHARED_SA2VA.read_text())['params']
    vocab = internvl['llm_config']['vocab_size'] + len(SA2VA_TOKENS)
    d = internvl['llm_config']['hidden_size']
    params = {k: v for k, v in internvl['params'].items() if not k.startswith('language_')}
    params.update(llm_shapes(dict(internvl['llm_config'], vocab_size=vocab)))
    params.update({k: v for k, v in sam2.items() if k.startswith('grounding_encoder.')})
    params.update({'text_hidden_fcs.0.weight': [d, d], 'text_hidden_fcs.0.bias': [d],
                   'text_hidden_fcs.2.weight': [256, d], 'text_hidden_fcs.2.bias': [256]})
    counts = _counts(params)
    manifest = dict(
        model=name, hf_repo=f'ByteDance/{name}', base_internvl=base_name, template='qwen_chat',
        llm_architecture=internvl['llm_config']['architectures'][0], vocab_size=vocab,
        added_tokens=SA2VA_TOKENS,
        added_token_ids={t: internvl['llm_config']['vocab_size'] + i
                         for i, t in enumerate(SA2VA_TOKENS)},
        tie_word_embeddings=False, sam2='sam2_hiera_l', num_tensors=len(params),
        param_counts=counts, total_params=sum(counts.values()),
        derived='not read from the released files: see make_internvl3_manifests.py',
        params=params)
    write_manifest('sa2va_hf', manifest)


def write_manifest(subdir, manifest):
    """``<subdir>/<manifest['model']>.json`` beside this script (one space indent)."""
    out = HERE / subdir / f'{manifest["model"]}.json'
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(manifest, indent=1) + '\n')
    print(out, manifest['num_tensors'], manifest['total_params'], file=sys.stderr)


if __name__ == '__main__':
    main()
