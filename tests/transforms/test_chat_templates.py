"""Chat templates and BOS/EOS rules as project data: equal to xtuner 0.2.0
field for field (legacy environment), and the same rules on transformers 5
whose tokenizer classes are named differently."""
from __future__ import annotations

import pytest

from projects.sa2va.transforms.chat_templates import (PROMPT_TEMPLATES,
                                                      TEMPLATE_ALIASES,
                                                      get_bos_eos_token_ids)
from projects.sa2va.transforms.text import get_template
from tests.text_reference import HAVE_XTUNER, NO_XTUNER_REASON, \
    restated_encode

needs_xtuner = pytest.mark.skipif(not HAVE_XTUNER, reason=NO_XTUNER_REASON)

CONVERSATION = [
    dict(input='<img>' + '<IMG_CONTEXT>' * 4 + '</img>\nSegment the cat.',
         output='It is [SEG].', system='Be brief.'),
    dict(input='And region1<vp><IMG_CONTEXT><IMG_CONTEXT></vp>?',
         output='A blanket <p>blanket</p> [SEG].'),
    dict(input='', output='Grey.'),
]


def _tokenizers(tiny_tokenizer_dir):
    """(label, tokenizer) covering every branch of the BOS/EOS rule."""
    from transformers import PreTrainedTokenizerFast

    from projects.sa2va.tokenization import add_special_tokens, \
        load_tokenizer
    qwen = load_tokenizer(tiny_tokenizer_dir)
    qwen_bos = load_tokenizer(tiny_tokenizer_dir)
    qwen_bos.bos_token = '<|im_start|>'
    generic_bos = PreTrainedTokenizerFast.from_pretrained(
        str(tiny_tokenizer_dir), bos_token='<|im_start|>')
    generic_nobos = PreTrainedTokenizerFast.from_pretrained(
        str(tiny_tokenizer_dir), bos_token=None)
    out = [('qwen2', qwen), ('qwen2 with a bos_token', qwen_bos),
           ('generic with BOS', generic_bos),
           ('generic without BOS', generic_nobos)]
    for _, tok in out:
        add_special_tokens(tok)
    return out


@needs_xtuner
@pytest.mark.parametrize('name', sorted(PROMPT_TEMPLATES))
def test_templates_equal_xtuner_field_for_field(name):
    from xtuner.utils import PROMPT_TEMPLATE
    ours = get_template(name)
    theirs = dict(PROMPT_TEMPLATE[name])
    assert sorted(ours) == sorted(theirs)
    for field, value in theirs.items():
        assert ours[field] == value, (name, field)


@needs_xtuner
def test_aliases_name_xtuner_templates():
    from xtuner.utils import PROMPT_TEMPLATE
    for alias, name in TEMPLATE_ALIASES.items():
        assert get_template(alias) == dict(PROMPT_TEMPLATE[name])


@needs_xtuner
def test_bos_eos_equal_xtuner(tiny_tokenizer_dir):
    from transformers import Qwen2Tokenizer  # the slow class on 4.x
    from xtuner.dataset.utils import get_bos_eos_token_ids as xtuner_rule
    toks = _tokenizers(tiny_tokenizer_dir)
    slow = Qwen2Tokenizer.from_pretrained(str(tiny_tokenizer_dir),
                                          bos_token='<|im_start|>')
    assert not slow.is_fast
    toks.append(('slow qwen2 with a bos_token', slow))
    for label, tok in toks:
        assert get_bos_eos_token_ids(tok) == xtuner_rule(tok), label


@needs_xtuner
@pytest.mark.parametrize('name', sorted(PROMPT_TEMPLATES))
def test_restated_encode_equals_xtuner(tiny_tokenizer_dir, name):
    """The reference the current environment uses (tests/text_reference.py)
    is xtuner's template_map_fn + encode_fn, cut included."""
    import copy

    from xtuner.dataset.map_fns import template_map_fn
    from xtuner.dataset.utils import encode_fn
    from xtuner.utils import PROMPT_TEMPLATE
    for label, tok in _tokenizers(tiny_tokenizer_dir)[:3]:
        for max_length in (100000, 37):
            example = template_map_fn(
                {'conversation': copy.deepcopy(CONVERSATION)},
                PROMPT_TEMPLATE[name])
            want = encode_fn(example, tok, max_length)
            got = restated_encode(copy.deepcopy(CONVERSATION), tok,
                                  get_template(name), max_length)
            assert got == want, (label, max_length)


def test_qwen_tokenizer_gets_no_bos_on_every_stack(tiny_tokenizer_dir):
    """transformers 5 calls the fast Qwen2 tokenizer ``Qwen2Tokenizer``
    (4.x: ``Qwen2TokenizerFast``, which xtuner gives no BOS): the rule must
    not start adding the tokenizer's bos_token there."""
    toks = dict(_tokenizers(tiny_tokenizer_dir))
    tok = toks['qwen2 with a bos_token']
    assert tok.bos_token_id is not None
    assert get_bos_eos_token_ids(tok) == ([], [tok.eos_token_id])
    generic = toks['generic with BOS']
    assert get_bos_eos_token_ids(generic) == ([generic.bos_token_id],
                                              [generic.eos_token_id])
    assert get_bos_eos_token_ids(toks['generic without BOS'])[0] is None


def test_qwen_tokenizer_without_eos_is_an_error(tiny_tokenizer_dir):
    from projects.sa2va.tokenization import load_tokenizer
    tok = load_tokenizer(tiny_tokenizer_dir)
    tok.eos_token = None
    with pytest.raises(ValueError, match='no eos_token'):
        get_bos_eos_token_ids(tok)


def test_get_template_copies_and_names_the_known():
    tpl = get_template('qwen_chat')
    tpl['STOP_WORDS'].append('x')
    tpl['SUFFIX'] = 'changed'
    assert get_template('qwen_chat')['STOP_WORDS'] == ['<|im_end|>',
                                                       '<|endoftext|>']
    assert get_template('internvl2_5') == get_template('qwen_chat')
    with pytest.raises(KeyError, match="phi3_chat.*internvl2_5"):
        get_template('vicuna')
