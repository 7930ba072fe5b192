"""The real Qwen2 byte-level vocabulary, offline: dashscope's ``qwen.tiktoken``
(151,643 BPE merges, in the PyPI package; the dev extra installs it) as a
``Qwen2TokenizerFast`` with Qwen2's pre-tokeniser. Tests that need it skip
when dashscope (or the file) is missing."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Sequence

import pytest

from projects.sa2va.tokenization import QWEN2_PRETOKENIZE_REGEX


def real_qwen_tokenizer(specials: Sequence[str], eos_token: str = '<|endoftext|>'):
    """Qwen2's BPE with ``specials`` as added special tokens from id 151643
    on, in order; pad ``<|endoftext|>``, no BOS."""
    dashscope = pytest.importorskip(
        'dashscope', reason='dashscope (dev extra) ships the Qwen vocabulary qwen.tiktoken')
    from transformers import Qwen2TokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter
    vocab = Path(dashscope.__file__).parent / 'resources' / 'qwen.tiktoken'
    if not vocab.is_file():
        pytest.skip(f'{vocab} is missing from this dashscope version')
    key = ('additional_special_tokens'
           if 'additional_special_tokens' in inspect.signature(TikTokenConverter).parameters
           else 'extra_special_tokens')
    tok = TikTokenConverter(vocab_file=str(vocab), pattern=QWEN2_PRETOKENIZE_REGEX,
                            **{key: list(specials)}).converted()
    return Qwen2TokenizerFast(tokenizer_object=tok, eos_token=eos_token,
                              pad_token='<|endoftext|>', unk_token=None, bos_token=None)


#: Qwen2.5(-VL)'s added tokens, ids 151643..151664 (151,665 tokens in all).
QWEN2_5_ADDED_TOKENS = (
    '<|endoftext|>', '<|im_start|>', '<|im_end|>', '<|object_ref_start|>', '<|object_ref_end|>',
    '<|box_start|>', '<|box_end|>', '<|quad_start|>', '<|quad_end|>', '<|vision_start|>',
    '<|vision_end|>', '<|vision_pad|>', '<|image_pad|>', '<|video_pad|>', '<tool_call>',
    '</tool_call>', '<|fim_prefix|>', '<|fim_middle|>', '<|fim_suffix|>', '<|fim_pad|>',
    '<|repo_name|>', '<|file_sep|>')
#: Qwen3(-VL) adds four more, ids 151665..151668 (151,669 tokens).
QWEN3_ADDED_TOKENS = QWEN2_5_ADDED_TOKENS + (
    '<tool_response>', '</tool_response>', '<think>', '</think>')
