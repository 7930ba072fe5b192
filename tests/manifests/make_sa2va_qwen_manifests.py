"""Write the key/shape manifests of the released Sa2VA-Qwen models (``sa2va_qwen/*.json``):
Sa2VA-Qwen2_5-VL-3B/7B and Sa2VA-Qwen3-VL-2B/4B in the official Hugging Face layout.

How each manifest is derived (independent of this project's ``QwenVLChat``):

* Layout: the official ``Sa2VAChatModelQwen`` (bytedance/Sa2VA
  ``projects/sa2va/hf/models_qwen2_5_vl`` / ``models_qwen3vl/modeling_sa2va_qwen.py``) holds
  ``model`` = transformers' ``Qwen2_5_VLForConditionalGeneration`` /
  ``Qwen3VLForConditionalGeneration``, ``grounding_encoder`` = SAM2 (``sam2_model``) and
  ``text_hidden_fcs`` = Linear(D, D), ReLU, Linear(D, 256); ``tools/convert_to_hf.py`` maps the
  training keys by ``'mllm.' -> ''`` and ``'.gamma' -> '.g_weight'``, sets
  ``text_config.vocab_size = len(tokenizer)`` and ``tie_word_embeddings = False`` (both levels)
  and writes the training config's ``template`` (``qwen_chat``). The official training code
  (``models/mllm/qwenvl.py``: ``self.model.language_model``, ``from_pretrained(dtype=...)``)
  needs transformers >= 4.56 (its pyproject pins 4.57.0), whose module names are
  ``model.visual.*`` / ``model.language_model.*`` / ``lm_head.*``: hence ``model.model.visual.*``,
  ``model.model.language_model.*``, ``model.lm_head.weight`` in the released files.
* ``model.*``: transformers' own class built on the meta device from the public config values of
  the base checkpoint (``BASES`` below, sources in ``SOURCES``) with the Sa2VA vocabulary and
  untied embeddings (needs transformers >= 4.57).
* Vocabulary: ``Qwen2_5_VL.add_special_tokens`` adds ``[SEG] <p> </p> <vp> </vp>`` to the
  checkpoint's tokenizer and resizes the embeddings to ``len(tokenizer)`` (shrinking the padded
  151936 / 152064 rows): Qwen2.5-VL tokenizer 151665 + 5 = 151670, Qwen3-VL 151669 + 5 = 151674.
* ``grounding_encoder.sam2_model.*``: copied from the shared Sa2VA-4B manifest
  (``shared/fixtures/sa2va_hf/manifests``; the same SAM2 Hiera-L, ``gamma`` stored as
  ``g_weight``).

Run with the current environment from the repository root::

    .venv-current/bin/python tests/manifests/make_sa2va_qwen_manifests.py
"""
import json

import torch
from make_internvl3_manifests import SA2VA_TOKENS, SHARED_SA2VA, write_manifest
from qwen_vl_public_configs import public_config

CLASSES = {'qwen2_5_vl': 'Qwen2_5_VLForConditionalGeneration',
           'qwen3_vl': 'Qwen3VLForConditionalGeneration'}
#: len(tokenizer) of the base checkpoints (ids 151643.. are the special tokens)
TOKENIZER_LEN = {'qwen2_5_vl': 151665, 'qwen3_vl': 151669}

#: the fields each manifest's text / vision config states, read from the base checkpoints'
#: public config.json values (``qwen_vl_public_configs.py``, shared with the recipe tests); the
#: other vision fields are the transformers defaults, equal to the released ones
TEXT_FIELDS = {'qwen2_5_vl': ('hidden_act', 'rms_norm_eps', 'max_position_embeddings',
                              'rope_theta'),
               'qwen3_vl': ('hidden_act', 'rms_norm_eps', 'max_position_embeddings', 'head_dim',
                            'attention_bias', 'rope_theta')}
VISION_FIELDS = {'qwen2_5_vl': ('hidden_size', 'in_chans', 'spatial_patch_size',
                                'tokens_per_second'),
                 'qwen3_vl': ('depth', 'hidden_size', 'intermediate_size', 'num_heads',
                              'num_position_embeddings', 'patch_size', 'spatial_merge_size',
                              'temporal_patch_size', 'in_channels', 'hidden_act',
                              'deepstack_visual_indexes')}
WIDTHS = ('hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads',
          'num_key_value_heads')


def _base(backbone, base):
    """A base checkpoint (``Qwen/<name>``) from its public config.json values; the vision
    merger projects to the text width."""
    cfg = public_config(base.split('/', 1)[1])
    text_src = cfg.get('text_config', cfg)      # Qwen2.5-VL keeps the text fields on top
    mrope = text_src['rope_scaling']
    rope = (dict(type='default', rope_type='default', mrope_section=mrope['mrope_section'])
            if backbone == 'qwen2_5_vl' else
            {k: mrope[k] for k in ('rope_type', 'mrope_interleaved', 'mrope_section')})
    text = {k: text_src[k] for k in TEXT_FIELDS[backbone]}
    text.update(rope_scaling=rope, **{k: text_src[k] for k in WIDTHS})
    vision = {k: cfg['vision_config'][k] for k in VISION_FIELDS[backbone]}
    vision['out_hidden_size'] = cfg['vision_config']['out_hidden_size']
    return dict(backbone=backbone, base=base, text=text, vision=vision)


BASES = {
    'Sa2VA-Qwen2_5-VL-3B': _base('qwen2_5_vl', 'Qwen/Qwen2.5-VL-3B-Instruct'),
    'Sa2VA-Qwen2_5-VL-7B': _base('qwen2_5_vl', 'Qwen/Qwen2.5-VL-7B-Instruct'),
    'Sa2VA-Qwen3-VL-2B': _base('qwen3_vl', 'Qwen/Qwen3-VL-2B-Instruct'),
    'Sa2VA-Qwen3-VL-4B': _base('qwen3_vl', 'Qwen/Qwen3-VL-4B-Instruct'),
}
SOURCES = {
    'layout, vocab rule, template': 'bytedance/Sa2VA (commit 9832e1a) tools/convert_to_hf.py, '
                                    'projects/sa2va/hf/models_qwen2_5_vl|models_qwen3vl, '
                                    'projects/sa2va/models/mllm/qwenvl.py, '
                                    'configs/sa2va_qwenvl25/sa2va_qwen25_3b.py (template qwen_chat)',
    'Qwen2.5-VL-3B': 'config.json of Qwen/Qwen2.5-VL-3B-Instruct (a verbatim copy on the Hub, '
                     '_name_or_path Qwen/Qwen2.5-VL-3B-Instruct, transformers 4.49.0.dev0): '
                     '2048 / 11008 / 36 layers / 16 heads / 2 kv, mrope 16-24-24, rope 1e6, '
                     'vision hidden 1280, out 2048, 14 px, tokens_per_second 2',
    'Qwen2.5-VL-7B': 'config.json of Qwen2.5-VL-7B-Instruct fine-tunes on the Hub (3584 / 18944 / '
                     '28 layers / 28 heads / 4 kv, mrope 16-24-24); vision as the 3B with '
                     'out_hidden_size 3584',
    'Qwen3-VL-4B': 'config.json of a Qwen3-VL-4B-Instruct copy (unsloth/Qwen3-VL-4B-Instruct, '
                   'transformers 4.57): text 2560 / 9728 / 36 layers / 32 heads / 8 kv / '
                   'head_dim 128, rope 5e6, interleaved mrope 24-20-20; vision depth 24, '
                   'hidden 1024, intermediate 4096, 16 heads, 2304 position embeddings, 16 px, '
                   'deepstack 5/11/17, out 2560',
    'Qwen3-VL-2B': 'the Qwen3-VL-4B vision tower (the 2B and 4B share it) with text 2048 / 6144 / '
                   '28 layers / 16 heads / 8 kv / head_dim 128: see unverified',
    'tokenizer lengths': 'Qwen2.5 tokenizers: special ids 151643..151664 (151665 tokens); Qwen3: '
                         '151643..151668 (151669), as tests/manifests/make_internvl3_manifests.py',
}
UNVERIFIED = {
    'Sa2VA-Qwen3-VL-2B': ['Qwen3-VL-2B-Instruct text widths (2048 / 6144 / 28 / 16 / 8) and its '
                          'vision tower are from memory of the model card, not read from a '
                          'config.json here (no hub access); bytedance/Sa2VA lists no '
                          'Sa2VA-Qwen3-VL-2B release (README at 9832e1a): this manifest is what '
                          'the official converter would write for configs/sa2va_qwen3_vl_2b.py'],
    'Sa2VA-Qwen3-VL-4B': ['vocab 151674 assumes the Qwen3-VL tokenizer has the Qwen3 '
                          'tokenizer\'s 151669 tokens'],
}


def sa2va_config(spec):
    """The Sa2VA-Qwen ``config.json`` model fields (text / vision config, untied, Sa2VA vocab)."""
    vocab = TOKENIZER_LEN[spec['backbone']] + len(SA2VA_TOKENS)
    text = dict(spec['text'], vocab_size=vocab, tie_word_embeddings=False,
                model_type=f'{spec["backbone"]}_text')
    return dict(model_type='sa2va_chat', architectures=['Sa2VAChatModelQwen'],
                template='qwen_chat', tie_word_embeddings=False, text_config=text,
                vision_config=dict(spec['vision']), image_token_id=151655,
                video_token_id=151656, vision_start_token_id=151652,
                vision_end_token_id=151653)


def qwen_shapes(backbone, config):
    import transformers
    from transformers import AutoConfig
    text = {k: v for k, v in config['text_config'].items() if k != 'model_type'}
    cfg = AutoConfig.for_model(backbone, text_config=text, vision_config=config['vision_config'],
                               tie_word_embeddings=False)
    with torch.device('meta'):
        model = getattr(transformers, CLASSES[backbone])(cfg)
    return {f'model.{k}': list(v.shape) for k, v in model.state_dict().items()}


def _counts(params):
    counts = {}
    for key, shape in params.items():
        part = '.'.join(key.split('.')[:3]) if key.startswith('model.') else key.split('.', 1)[0]
        counts[part] = counts.get(part, 0) + int(torch.Size(shape).numel())
    return counts


def main():
    sam2 = json.loads(SHARED_SA2VA.read_text())['params']
    for name, spec in BASES.items():
        config = sa2va_config(spec)
        d = config['text_config']['hidden_size']
        params = qwen_shapes(spec['backbone'], config)
        params.update({k: v for k, v in sam2.items() if k.startswith('grounding_encoder.')})
        params.update({'text_hidden_fcs.0.weight': [d, d], 'text_hidden_fcs.0.bias': [d],
                       'text_hidden_fcs.2.weight': [256, d], 'text_hidden_fcs.2.bias': [256]})
        counts = _counts(params)
        n_tok = TOKENIZER_LEN[spec['backbone']]
        manifest = dict(
            model=name, hf_repo=f'ByteDance/{name}', base_model=spec['base'],
            backbone=spec['backbone'], config=config,
            vocab_size=config['text_config']['vocab_size'], added_tokens=SA2VA_TOKENS,
            added_token_ids={t: n_tok + i for i, t in enumerate(SA2VA_TOKENS)},
            sam2='sam2_hiera_l', num_tensors=len(params), param_counts=counts,
            total_params=sum(counts.values()), sources=SOURCES,
            unverified=UNVERIFIED.get(name, []),
            derived='not read from the released files: see make_sa2va_qwen_manifests.py',
            params=params)
        write_manifest('sa2va_qwen', manifest)


if __name__ == '__main__':
    main()
