"""The cycle with a real Qwen2 byte-level vocabulary (InternVL2.5-4B's LLM is
Qwen2.5): the teacher's stop on phi3's ``<|end|>``, the ids the corruption and
the Gumbel top-k may use, and the tokenisation of the RefCOCO question.

The vocabulary is dashscope's ``qwen.tiktoken`` (151,643 byte-level BPE
merges, offline in the PyPI package; the dev extra installs it), turned into
a ``tokenizers`` BPE with Qwen2's pre-tokeniser; InternVL's image tokens are
added as in the real checkpoint. Qwen2.5 has no ``<|end|>`` token: it is
``< | end | >`` and after a caption ending in ``.`` the first piece fuses
(``.<``), so matching the ids of ``encode('<|end|>')`` never stops.
"""
from __future__ import annotations

import pytest
import torch

from projects.sa2va.constants import INTERNVL_IMAGE_TOKENS
from tests.models.cycle_helpers import build_cycle_model
from tests.models.cycle_helpers import cycle_batch as _batch
from tests.qwen_vocab import real_qwen_tokenizer



@pytest.fixture(scope='module')
def qwen_dir(tmp_path_factory):
    fast = real_qwen_tokenizer(['<|endoftext|>', '<|im_start|>', '<|im_end|>'])
    fast.add_special_tokens({'additional_special_tokens': list(INTERNVL_IMAGE_TOKENS)})
    out = tmp_path_factory.mktemp('qwen_tokenizer')
    fast.save_pretrained(str(out))
    return out


@pytest.fixture(scope='module')
def model(qwen_dir):
    return build_cycle_model(qwen_dir, caption_len=12)


def _enc(model, text):
    return model.tokenizer.encode(text, add_special_tokens=False)


def test_qwen_vocab_spells_phi3_end_in_pieces(model):
    assert len(model.tokenizer) > 151_643
    pieces = [model.tokenizer.decode([i]) for i in _enc(model, 'A red car.<|end|>')]
    assert pieces == ['A', ' red', ' car', '.<', '|', 'end', '|', '>']
    assert model.end_ids == _enc(model, '<|end|>') and len(model.end_ids) == 5


def test_teacher_stops_at_the_end_string_fused_after_a_period(model, monkeypatch):
    # sample 0 writes a caption, the end string (its '<' fused into '.<') and
    # a new turn; sample 1 ends with EOS after two tokens
    script0 = _enc(model, 'A red car.<|end|>\n<|user|>\nmore')
    script1 = _enc(model, 'Two dogs') + [model.eos_id]
    real = model._lm_head
    step = []

    def head(hidden):
        logits = real(hidden)
        t = len(step)
        step.append(1)
        for i, script in enumerate((script0, script1)):
            if t < len(script):
                logits[i, script[t]] = 1e4
        return logits

    monkeypatch.setattr(model, '_lm_head', head)
    b = _batch()
    out = model.generate_pseudo_captions(b['pixel_values1'], b['prompt_masks1'])
    caption = _enc(model, 'A red car.')
    assert out['lengths'].tolist() == [len(caption), 2]
    assert out['tokens'][0, :len(caption)].tolist() == caption
    assert (out['tokens'][0, len(caption):] == model.pad_id).all()
    assert out['tokens'][1, :2].tolist() == _enc(model, 'Two dogs')
    assert out['stopped'].tolist() == [True, True]
    assert len(step) == 8                       # stopped at the '>' of sample 0


def test_ordinary_pieces_of_the_end_string_stay_allowed(model):
    special = set(model.special_ids.tolist())
    ordinary = set(_enc(model, '<|end|>')) | set(_enc(model, 'the end.<'))
    assert not ordinary & special
    assert ordinary <= set(model.allowed_ids.tolist())
    tok = model.tokenizer
    must = {tok.convert_tokens_to_ids(t) for t in
            ('[SEG]', '<IMG_CONTEXT>', '<vp>', '<|endoftext|>', '<|im_end|>')}
    assert must <= special


def test_refcoco_question_is_tokenised_whole_as_at_inference(model, monkeypatch):
    from projects.sa2va.transforms.text import image_block
    question, answer = 'Please segment {class_name} in this image.', 'It is [SEG].'
    monkeypatch.setattr(model, '_draw_templates', lambda n: [(question, answer)] * n)
    seen = []
    real_merge = model._merge

    def merge(ids, *args):
        seen.append(ids.clone())
        return real_merge(ids, *args)

    monkeypatch.setattr(model, '_merge', merge)
    captions = ['the man on the left', 'a red car']
    torch.manual_seed(0)
    out = model(mode='loss', captions=captions, **_batch(seed=1))
    assert all(torch.isfinite(v) for v in out.values())
    enc = model.encoder
    for i, caption in enumerate(captions):
        user = (image_block(1, model.mllm.num_image_token) + '\n'
                + question.replace('{class_name}', caption))
        want = list(enc.bos_ids) + enc.encode_text(
            enc.template['INSTRUCTION'].format(input=user, round=1))
        row = seen[0][i].tolist()
        assert row[:len(want)] == want, i
        # the caption's first word carries its space: no lone ' ' piece
        assert _enc(model, ' ')[0] not in row[:len(want)]
