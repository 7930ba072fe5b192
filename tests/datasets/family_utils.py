"""Helpers of the family dataset tests (visual prompt, refseg, GCG): build a
dataset from its base config over generated sample data, and Sa2VA's own
string-level encodings as references."""
from __future__ import annotations

import copy
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONTEXT = '<IMG_CONTEXT>'


def make_family_data(root: Path, family: str, **kw) -> dict:
    """Generated sample data of one family under ``root`` (the manifest)."""
    from projects.sa2va.sample_data.api import make_sample_data
    return make_sample_data(root, families=[family], **kw)


def base_config(name: str):
    from mmengine.config import Config
    return Config.fromfile(str(REPO / 'configs' / '_base_' / 'datasets'
                               / f'{name}.py'))


def build_dataset(cfg_dict, tokenizer, template: str = 'phi3_chat',
                  max_length: int = 8192, **overrides):
    """A dataset from a base-config dict, with the experiment's text
    settings filled in as ``MixedDataset(pipeline_defaults=...)`` does
    (a step's own arguments win), other keys overridden."""
    import projects.sa2va.datasets  # noqa: F401  (registers the families)
    from projects.sa2va.datasets.mixing import apply_pipeline_defaults
    from projects.sa2va.registry import DATASETS
    cfg = copy.deepcopy(cfg_dict.to_dict() if hasattr(cfg_dict, 'to_dict')
                        else dict(cfg_dict))
    cfg.update(overrides)
    return DATASETS.build(apply_pipeline_defaults(cfg, dict(
        EncodeConversation=dict(tokenizer=tokenizer, template=template,
                                max_length=max_length))))


def encoder_of(dataset):
    from projects.sa2va.transforms import EncodeConversation
    for t in dataset.pipeline.transforms:
        if isinstance(t, EncodeConversation):
            return t.encoder
    raise AssertionError('no EncodeConversation in the pipeline')


def spell(text: str, num_tiles: int) -> str:
    """Sa2VA's spelled-out text: ``<image>`` -> the image token string."""
    block = '<img>' + CONTEXT * (256 * num_tiles) + '</img>'
    return re.sub(r'<IMG_CONTEXT\*(\d+)>', lambda m: CONTEXT * int(m[1]),
                  text.replace('<image>', block))


def region_prompt(counts) -> str:
    """Sa2VA's region prompt, written out here independently."""
    parts = [f'region{i + 1}<vp>' + CONTEXT * k + '</vp>'
             for i, k in enumerate(counts)]
    return (f'There are {len(counts)} part regions in the picture: '
            + ', '.join(parts) + '.\n')


def xtuner_encode(conversation, tokenizer, template: str,
                  max_length: int = 100000) -> dict:
    """Sa2VA's path for Osprey / GCG / LLaVA: xtuner ``template_map_fn`` +
    ``encode_fn`` on the spelled-out strings (``tests.text_reference``)."""
    from tests.text_reference import reference_encode
    return reference_encode(conversation, tokenizer, template, max_length)


def sa2va_v1_refcoco_encode(conversation, tokenizer, instruction: str,
                            suffix: str) -> dict:
    """Sa2VA v1 ``ReferSegmDataset.get_inputid_labels`` (re-stated): the
    first turn encoded with the tokenizer's special tokens, no EOS, no
    separator, the suffix closing each answer."""
    ids, labels = [], []
    for i, turn in enumerate(conversation):
        enc_in = tokenizer.encode(instruction.format(input=turn['input'],
                                                     round=i + 1),
                                  add_special_tokens=(i == 0))
        enc_out = tokenizer.encode(turn['output'] + suffix,
                                   add_special_tokens=False)
        ids += enc_in + enc_out
        labels += [-100] * len(enc_in) + enc_out
    return dict(input_ids=ids, labels=labels)
