"""Image-token strings as backbone data (issue 21, decision 1): the text
steps write Qwen-VL's ``<|vision_start|>`` / ``<|image_pad|>`` /
``<|vision_end|>`` for a Qwen backbone (InternVL's stay the default, byte for
byte: tests/transforms/test_text.py), the tiny Qwen-VL tokenizer, the
control-token check, and the ids of a sample with the REAL Qwen2 vocabulary
against the official Sa2VA-Qwen text.

The real vocabulary is dashscope's ``qwen.tiktoken`` (151,643 byte-level BPE
merges, offline in the PyPI package, dev extra) with Qwen2.5-VL's added
tokens at their official ids (151643 ``<|endoftext|>`` ... 151656
``<|video_pad|>``, 151657 ``<tool_call>`` ... 151664 ``<|file_sep|>``), then
Sa2VA's five tokens (151665 ``[SEG]`` ...), as the released Sa2VA-Qwen2.5-VL
tokenizer has them.
"""
from __future__ import annotations

import pytest

from projects.sa2va.constants import (IMAGE_TOKENS, QWEN_VL_SPECIAL_TOKENS,
                                      SA2VA_SPECIAL_TOKENS)
from projects.sa2va.datasets.base import text_defect
from projects.sa2va.tokenization import add_special_tokens, build_tiny_tokenizer
from projects.sa2va.transforms import (AddVisualPromptText, ConversationEncoder,
                                       EncodeConversation, image_block,
                                       video_block)
from projects.sa2va.transforms.text import collapse_image_tokens
from tests.qwen_vocab import real_qwen_tokenizer

START, PAD, END = IMAGE_TOKENS['qwen_vl']
#: Qwen2.5's non-special added tokens after the 14 special ones
QWEN_EXTRA_TOKENS = ('<tool_call>', '</tool_call>', '<|fim_prefix|>', '<|fim_middle|>',
                     '<|fim_suffix|>', '<|fim_pad|>', '<|repo_name|>', '<|file_sep|>')


@pytest.fixture(scope='module')
def tiny_qwen(tmp_path_factory):
    path = tmp_path_factory.mktemp('tiny_qwen_vl_tok')
    return build_tiny_tokenizer(path, image_tokens='qwen_vl'), path


def test_image_tokens_table_and_blocks():
    assert IMAGE_TOKENS == {'internvl': ('<img>', '<IMG_CONTEXT>', '</img>'),
                            'qwen_vl': ('<|vision_start|>', '<|image_pad|>', '<|vision_end|>')}
    assert image_block(2, 3) == '<img><IMG_CONTEXT*6></img>'
    assert image_block(1, 4, 'qwen_vl') == '<|vision_start|><IMG_CONTEXT*4><|vision_end|>'
    assert video_block(2, 3, image_tokens='qwen_vl') == '\n'.join(
        ['<|vision_start|><IMG_CONTEXT*3><|vision_end|>'] * 2)
    assert collapse_image_tokens(START + PAD * 5 + END + '<vp>' + PAD * 2 + '</vp>',
                                 'qwen_vl') == START + '[5]' + END + '<vp>[2]</vp>'
    with pytest.raises(KeyError, match='qwen_vl'):
        image_block(1, 4, 'qwen')
    with pytest.raises(KeyError, match='unknown image tokens'):
        EncodeConversation('unused', image_tokens='llava')


def test_tiny_qwen_tokenizer_has_qwen_tokens_and_no_internvl_ones(tiny_qwen):
    tok, path = tiny_qwen
    for t in QWEN_VL_SPECIAL_TOKENS:
        assert len(tok.encode(t, add_special_tokens=False)) == 1, t
    assert tok.convert_tokens_to_ids('<|endoftext|>') == tok.pad_token_id == 0
    vocab = tok.get_vocab()
    assert not {'<img>', '</img>', '<IMG_CONTEXT>'} & set(vocab)
    # an InternVL encoder cannot run on it, and a Qwen encoder not on InternVL's
    with pytest.raises(ValueError, match='IMG_CONTEXT'):
        ConversationEncoder(tok, 'qwen_chat')
    internvl = build_tiny_tokenizer()
    add_special_tokens(internvl)
    with pytest.raises(ValueError, match='image_pad'):
        ConversationEncoder(internvl, 'qwen_chat', image_tokens='qwen_vl')


def test_qwen_blocks_encode_to_the_spelled_out_text(tiny_qwen):
    """A visual-prompt sample: the image block and each <vp> block are runs of
    <|image_pad|> ids, equal to tokenising the spelled-out string."""
    _, path = tiny_qwen
    step = EncodeConversation(str(path), template='qwen_chat', image_tokens='qwen_vl')
    res = dict(conversation=[dict(input='<image>\nWhat is region1?', output='A red ball.')],
               region_token_counts=[2, 3], num_image_tokens=12)
    res = step(AddVisualPromptText()(res))
    tok = step.encoder.tokenizer
    text_in = ('<|im_start|>user\n' + START + PAD * 12 + END + '\nThere are 2 part regions '
               'in the picture: region1<vp>' + PAD * 2 + '</vp>, region2<vp>' + PAD * 3
               + '</vp>.\nWhat is region1?<|im_end|>\n<|im_start|>assistant\n')
    text_out = 'A red ball.<|im_end|>'
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    assert res['input_ids'] == enc(text_in) + enc(text_out) + enc('\n')
    pad = tok.convert_tokens_to_ids(PAD)
    assert res['input_ids'].count(pad) == 12 + 2 + 3
    assert res['labels'] == [-100] * len(enc(text_in)) + enc(text_out) + [-100]


@pytest.mark.parametrize('backbone', sorted(IMAGE_TOKENS))
def test_control_check_rejects_every_backbones_image_tokens(backbone):
    """Data text holding an image-token string of any backbone is rejected:
    in a Qwen run it would become a <|image_pad|> id and break the count."""
    for token in IMAGE_TOKENS[backbone]:
        reason, message = text_defect(f'a cat {token} on a mat', 'expression 0')
        assert reason == 'control_token_text' and token[:6] in message
    for token in QWEN_VL_SPECIAL_TOKENS:
        assert text_defect(token, 'caption')[0] == 'control_token_text'


# ------------------------------------------------- the real Qwen2 vocabulary
@pytest.fixture(scope='module')
def qwen_vl_tokenizer():
    """Qwen2.5-VL's tokenizer rebuilt offline: the Qwen2 BPE, its 22 added
    tokens at their official ids, then Sa2VA's 5 (the released layout)."""
    fast = real_qwen_tokenizer(QWEN_VL_SPECIAL_TOKENS, eos_token='<|im_end|>')
    fast.add_tokens(list(QWEN_EXTRA_TOKENS))
    add_special_tokens(fast)
    return fast


def test_real_qwen_vl_ids_are_the_official_ones(qwen_vl_tokenizer):
    tok = qwen_vl_tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_VL_SPECIAL_TOKENS}
    assert ids == dict(zip(QWEN_VL_SPECIAL_TOKENS, range(151643, 151657)))
    assert [tok.convert_tokens_to_ids(t) for t in QWEN_EXTRA_TOKENS] == \
        list(range(151657, 151665))
    assert [tok.convert_tokens_to_ids(t) for t in SA2VA_SPECIAL_TOKENS] == \
        list(range(151665, 151670))
    # the ids transformers' Qwen2.5-VL config expects
    transformers = pytest.importorskip('transformers')
    cfg_cls = getattr(transformers, 'Qwen2_5_VLConfig', None)
    if cfg_cls is not None:
        cfg = cfg_cls()
        assert (cfg.vision_start_token_id, cfg.image_token_id, cfg.video_token_id) == \
            (ids[START], ids[PAD], ids['<|video_pad|>'])


def test_real_qwen_vl_sample_equals_the_official_sa2va_qwen_text(qwen_vl_tokenizer):
    """A referring sample (image of 6 merged tokens, '[SEG]' answer) and a
    visual-prompt turn encode to the ids of the official Sa2VA-Qwen text:
    qwen_chat around '<|vision_start|>' + '<|image_pad|>' x n +
    '<|vision_end|>', input and output tokenised separately (xtuner's
    encode_fn, which the official tokenize_conversation follows), SEP '\\n',
    no EOS (SUFFIX_AS_EOS)."""
    tok = qwen_vl_tokenizer
    step = EncodeConversation(tok, template='qwen_chat', image_tokens='qwen_vl')
    conv = [dict(input='<image>\nPlease segment the cat on the left.',
                 output='Sure, [SEG].'),
            dict(input='And the dog?', output='It is [SEG].')]
    res = step(dict(conversation=conv, num_image_tokens=6))
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    official = []
    for i, turn in enumerate(conv):
        text = turn['input'].replace('<image>', START + PAD * 6 + END)
        official += enc(f'<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n')
        official += enc(turn['output'] + '<|im_end|>') + enc('\n')
    assert res['input_ids'] == official
    i = res['input_ids'].index(151652)
    assert res['input_ids'][i:i + 8] == [151652] + [151655] * 6 + [151653]
    assert res['input_ids'].count(151665) == 2  # [SEG]: one id each
    assert 151645 in res['labels'] and res['labels'].count(-100) > 0
    # a <vp> block: <vp> + <|image_pad|> x cells + </vp>
    vp = step(AddVisualPromptText()(dict(
        conversation=[dict(input='<image>\nWhat is region1?', output='A cat.')],
        region_token_counts=[3], num_image_tokens=6)))
    j = vp['input_ids'].index(151668)
    assert vp['input_ids'][j:j + 5] == [151668] + [151655] * 3 + [151669]
