"""Conversation encoding: token for token as Sa2VA (xtuner's encode_fn on the
spelled-out strings), image blocks inserted as ids, max_length policy."""
from __future__ import annotations

import copy

import pytest

from projects.sa2va.constants import IMG_CONTEXT_TOKEN
from projects.sa2va.transforms import (ConversationEncoder, EncodeConversation,
                                       RecordError, SampleRejected,
                                       collapse_image_tokens,
                                       conversation_from_turns, image_block,
                                       video_block, visual_prompt_text)
from tests.text_reference import reference_encode


def _spell(text: str) -> str:
    """Expand compact context runs into Sa2VA's spelled-out string."""
    import re
    return re.sub(r'<IMG_CONTEXT\*(\d+)>',
                  lambda m: IMG_CONTEXT_TOKEN * int(m.group(1)), text)


def _xtuner_reference(conversation, tokenizer, template_name, max_length,
                      system=''):
    """Sa2VA's path: xtuner template_map_fn + encode_fn on full strings
    (``tests.text_reference``)."""
    conv = [dict(input=_spell(t['input']), output=_spell(t['output']))
            for t in copy.deepcopy(conversation)]
    if system:
        conv[0]['system'] = system
    return reference_encode(conv, tokenizer, template_name, max_length)


CONVERSATIONS = [
    [dict(input=image_block(2) + '\nCan you segment the red car in this '
          'image?', output='Sure, it is [SEG].')],
    [dict(input=image_block(1) + '\n' + visual_prompt_text([3, 7], True)
          + 'What is the relation between region1 and region2?',
          output='region1 is a cat sleeping on region2, a folded blanket.'),
     dict(input='And its color?', output='Grey.'),
     dict(input='Where is it?', output='On the sofa <p>cat</p> [SEG].')],
    [dict(input=video_block(3) + '\nPlease segment the moving dog.',
          output='It is [SEG].')],
    [dict(input='A text-only question about the sky.',
          output='The sky is blue.')],
]


@pytest.mark.parametrize('template', ['qwen_chat', 'phi3_chat',
                                      'internlm2_chat'])
@pytest.mark.parametrize('conv', CONVERSATIONS)
def test_ids_equal_sa2va_string_encoding(tiny_tokenizer, template, conv):
    enc = ConversationEncoder(tiny_tokenizer, template, max_length=100000)
    out = enc.encode(conv)
    ref = _xtuner_reference(conv, tiny_tokenizer, template, 100000)
    assert out['input_ids'] == ref['input_ids']
    assert out['labels'] == ref['labels']


def test_ids_equal_with_bos_tokenizer_and_system(tiny_tokenizer_dir):
    """A tokenizer family with BOS (llama/phi3 style): BOS once at the start
    when the suffix acts as EOS; system prompt on the first turn."""
    from transformers import PreTrainedTokenizerFast

    from projects.sa2va.tokenization import add_special_tokens
    tok = PreTrainedTokenizerFast.from_pretrained(
        str(tiny_tokenizer_dir), bos_token='<|im_start|>')
    add_special_tokens(tok)
    conv = CONVERSATIONS[1]
    for template in ('phi3_chat', 'qwen_chat'):
        enc = ConversationEncoder(tok, template, 100000, system='Be brief.')
        out = enc.encode(conv)
        ref = _xtuner_reference(conv, tok, template, 100000,
                                system='Be brief.')
        assert out['input_ids'][0] == tok.bos_token_id
        assert out['input_ids'] == ref['input_ids']
        assert out['labels'] == ref['labels']


def test_labels_supervise_only_answers(tiny_tokenizer):
    enc = ConversationEncoder(tiny_tokenizer, 'qwen_chat', 100000)
    out = enc.encode(CONVERSATIONS[0])
    ids, labels = out['input_ids'], out['labels']
    supervised = [i for i, l in zip(ids, labels) if l != -100]
    text = tiny_tokenizer.decode(supervised)
    assert text == 'Sure, it is [SEG].<|im_end|>'
    assert ids.count(enc.context_id) == 512
    seg_id = tiny_tokenizer.convert_tokens_to_ids('[SEG]')
    assert labels[ids.index(seg_id)] == seg_id


def test_max_length_drops_whole_turns_and_rejects(tiny_tokenizer):
    conv = CONVERSATIONS[1]
    full = ConversationEncoder(tiny_tokenizer, 'qwen_chat', 100000)
    turn_lens = []
    prev = 0
    for k in range(1, 4):
        n = len(full.encode(conv[:k])['input_ids'])
        turn_lens.append(n - prev)
        prev = n
    # room for two turns but not three
    limit = turn_lens[0] + turn_lens[1] + turn_lens[2] - 1
    out = ConversationEncoder(tiny_tokenizer, 'qwen_chat', limit).encode(conv)
    assert out['num_turns'] == 2 and out['num_turns_dropped'] == 1
    assert out['input_ids'] == full.encode(conv[:2])['input_ids']
    assert out['input_ids'].count(full.context_id) == 256 + 10
    with pytest.raises(SampleRejected, match='first turn') as info:
        ConversationEncoder(tiny_tokenizer, 'qwen_chat',
                            turn_lens[0] - 1).encode(conv)
    assert info.value.reason == 'too_long'


def test_encoder_requires_special_tokens(tiny_tokenizer_dir):
    from projects.sa2va.tokenization import load_tokenizer
    tok = load_tokenizer(tiny_tokenizer_dir)  # no [SEG] / <vp> yet
    with pytest.raises(ValueError, match=r"\[SEG\]"):
        ConversationEncoder(tok, 'qwen_chat')


def test_encode_transform_image_and_video(tiny_tokenizer):
    t = EncodeConversation(tiny_tokenizer, 'qwen_chat', max_length=4096)
    conv = [dict(input='<image>\nWhat is it?', output='A dog.')]
    out = t(dict(conversation=conv, num_tiles=3))
    ids = out['input_ids']
    ctx = t.encoder.context_id
    assert ids.count(ctx) == 768
    text = t.encoder.decode(ids)
    assert '<img>[256 x 3]</img>\nWhat is it?' in text
    out = t(dict(conversation=conv, num_frames=2))
    text = t.encoder.decode(out['input_ids'])
    assert '<img>[256 x 1]</img>\n<img>[256 x 1]</img>\nWhat is it?' in text
    with pytest.raises(KeyError, match='num_tiles'):
        t(dict(conversation=conv))
    with pytest.raises(RecordError, match='placeholders'):
        t(dict(conversation=[dict(input='<image><image>', output='x')],
               num_tiles=1))
    small = EncodeConversation(tiny_tokenizer, 'qwen_chat', max_length=100)
    with pytest.raises(RecordError) as info:
        small(dict(conversation=conv, num_tiles=1))
    assert info.value.reason == 'too_long'


def test_conversation_from_turns_rules():
    turns = [dict(**{'from': 'gpt', 'value': 'hello'}),
             dict(**{'from': 'human', 'value': '<image>\nA'}),
             dict(**{'from': 'human', 'value': 'B'}),
             dict(**{'from': 'gpt', 'value': 'C'}),
             dict(**{'from': 'human', 'value': 'D'}),
             dict(**{'from': 'gpt', 'value': 'E'}),
             dict(**{'from': 'human', 'value': 'dangling'})]
    assert conversation_from_turns(turns) == [
        dict(input='<image>\nAB', output='C'), dict(input='D', output='E')]
    with pytest.raises(ValueError, match='unknown role'):
        conversation_from_turns([{'from': 'bot', 'value': 'x'}])


def test_collapse_image_tokens():
    text = ('<img>' + IMG_CONTEXT_TOKEN * 512 + '</img>\nregion1<vp>'
            + IMG_CONTEXT_TOKEN * 5 + '</vp> <img><IMG_CONTEXT*300></img>')
    assert collapse_image_tokens(text) == (
        '<img>[256 x 2]</img>\nregion1<vp>[5]</vp> <img>[300]</img>')
