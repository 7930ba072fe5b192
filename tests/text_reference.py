"""Reference text encoding for the token-for-token tests: Sa2VA v1's path,
xtuner ``template_map_fn`` + ``encode_fn`` on fully spelled-out strings.

With xtuner installed (the legacy environment) the reference is xtuner's own
functions and templates. Without it (the current environment) it is the
restatement below over the project's template data; on the legacy
environment ``tests/transforms/test_chat_templates.py`` checks the data and
this restatement against xtuner, so both environments compare the
project's encoder with the same rules.
"""
from __future__ import annotations

import copy
import importlib.util

HAVE_XTUNER = importlib.util.find_spec('xtuner') is not None
NO_XTUNER_REASON = ('xtuner is not installed (legacy environment only: '
                    'make setup-legacy / make test-legacy)')


def reference_template(name: str) -> dict:
    """The template ``name`` (xtuner's entry when xtuner is installed)."""
    if HAVE_XTUNER:
        from xtuner.utils import PROMPT_TEMPLATE
        return PROMPT_TEMPLATE[name]
    from projects.sa2va.transforms.chat_templates import PROMPT_TEMPLATES
    return PROMPT_TEMPLATES[name]


def restated_encode(conversation, tokenizer, template: dict,
                    max_length: int) -> dict:
    """xtuner 0.2.0's ``template_map_fn`` then ``encode_fn`` (text only),
    restated: per turn the instruction (system on the first turn when given),
    BOS when the previous answer ended with EOS, the answer + suffix
    (supervised), EOS unless the suffix is the EOS, then the separator;
    finally cut at ``max_length``."""
    from projects.sa2va.transforms.chat_templates import \
        get_bos_eos_token_ids
    bos, eos = get_bos_eos_token_ids(tokenizer)
    bos, eos = bos or [], eos or []
    ids, labels = [], []
    needs_bos = True
    for i, turn in enumerate(conversation):
        text_in = template['INSTRUCTION'].format(input=turn.get('input') or '',
                                                 round=i + 1)
        if turn.get('system'):
            text_in = template['SYSTEM'].format(system=turn['system']) + text_in
        text_out = turn.get('output', '') + (template.get('SUFFIX') or '')
        if needs_bos:
            ids += bos
            labels += [-100] * len(bos)
        enc_in = tokenizer.encode(text_in, add_special_tokens=False)
        enc_out = tokenizer.encode(text_out, add_special_tokens=False)
        ids += enc_in + enc_out
        labels += [-100] * len(enc_in) + enc_out
        needs_bos = not template.get('SUFFIX_AS_EOS', False)
        if needs_bos:
            ids += eos
            labels += eos
        sep = template.get('SEP') or ''
        if sep:
            enc_sep = tokenizer.encode(sep, add_special_tokens=False)
            ids += enc_sep
            labels += [-100] * len(enc_sep)
    return dict(input_ids=ids[:max_length], labels=labels[:max_length])


def reference_encode(conversation, tokenizer, template: str,
                     max_length: int = 100000) -> dict:
    """Ids and labels of ``conversation`` (``[{'input', 'output'[,
    'system']}]``, spelled-out strings) as Sa2VA v1 builds them."""
    conversation = copy.deepcopy(list(conversation))
    if HAVE_XTUNER:
        from xtuner.dataset.map_fns import template_map_fn
        from xtuner.dataset.utils import encode_fn
        example = template_map_fn({'conversation': conversation},
                                  reference_template(template))
        return encode_fn(example, tokenizer, max_length)
    return restated_encode(conversation, tokenizer,
                           reference_template(template), max_length)
