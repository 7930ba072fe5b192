"""Tokenizer helpers: the tiny offline tokenizer and Sa2VA's special tokens.

Real runs load the tokenizer of their InternVL checkpoint
(``AutoTokenizer.from_pretrained(model_path, trust_remote_code=True)``).
Tests and the demo cannot download one, so :func:`build_tiny_tokenizer`
makes a small byte-level BPE tokenizer with the same structure as Qwen2's
(the LLM of InternVL2.5-1B/4B): the Qwen2 pre-tokenisation regex, byte-level
alphabet, ``<|endoftext|>`` as pad/eos, ChatML and phi3 template tokens and
InternVL's image tokens as added special tokens. It is saved and loaded as a
normal transformers tokenizer directory (class ``Qwen2TokenizerFast``).
``image_tokens='qwen_vl'`` makes the Qwen-VL variant instead: the same BPE
with Qwen2.5-VL's special tokens (``<|vision_start|>``, ``<|image_pad|>``,
...: :data:`~projects.sa2va.constants.QWEN_VL_SPECIAL_TOKENS`) and no
InternVL image tokens, as the Sa2VA-Qwen tokenizers.
"""
from __future__ import annotations

import os
from pathlib import Path

from .constants import (INTERNVL_IMAGE_TOKENS, QWEN_VL_SPECIAL_TOKENS,
                        SA2VA_SPECIAL_TOKENS)

# Template tokens of the chat formats we support (ChatML for Qwen /
# InternLM2, phi3). Kept as added special tokens like the real tokenizers.
TEMPLATE_TOKENS = ('<|endoftext|>', '<|im_start|>', '<|im_end|>',
                   '<|system|>', '<|user|>', '<|assistant|>', '<|end|>')

# Qwen2's pre-tokenisation pattern (contractions, letters, single digits,
# punctuation runs, newlines, spaces).
QWEN2_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?"
    r"[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

_CORPUS_WORDS = (
    'the a an of in on at to and or is are was be this that these those it '
    'its with for from by as image picture photo video frame region regions '
    'part object objects mask segment segmentation please can you could '
    'what where which who how why describe description detailed short '
    'answer question single word phrase sure here it is there are left right '
    'top bottom middle center front back behind next near far large small '
    'big little red green blue yellow white black gray grey brown orange '
    'pink purple person man woman boy girl child people dog cat bird horse '
    'car bus truck bike bicycle train boat plane table chair sofa bed cup '
    'bottle bowl plate food pizza cake tree grass sky road street building '
    'house window door wall floor water sea river mountain snow sand ball '
    'standing sitting walking running holding wearing looking moving '
    'shirt hat coat dress bag umbrella phone book screen laptop keyboard '
    'one two three four five first second third last other another each '
    'all some many few more most very not no yes has have had do does did '
    'will would should may might must shall also only just then than so '
    'into over under up down out about after before during while when '
    'glossy ceramic mug chipped rim thin stripe near base folded blanket '
    'grey curled sleeping relation between color shape texture surface').split()


def _tiny_corpus() -> list[str]:
    """A deterministic English corpus for training the tiny BPE."""
    words = _CORPUS_WORDS
    lines = []
    for i in range(len(words)):
        chunk = [words[(i * 7 + j * 13) % len(words)] for j in range(12)]
        lines.append(' '.join(chunk).capitalize() + '.')
        lines.append(' '.join(chunk[:6]) + '? ' + ' '.join(chunk[6:]) + '!')
    lines.extend(words)
    lines.append('0123456789 region1 region2 region3 region10 [SEG] <p> </p>')
    return lines


#: added special tokens of the tiny tokenizer per backbone family
#: (``<|endoftext|>`` first: id 0, the pad / eos).
TINY_SPECIAL_TOKENS = {
    'internvl': TEMPLATE_TOKENS + INTERNVL_IMAGE_TOKENS,
    'qwen_vl': QWEN_VL_SPECIAL_TOKENS,
}


def build_tiny_tokenizer(save_dir: str | os.PathLike | None = None,
                         vocab_size: int = 1024,
                         image_tokens: str = 'internvl'):
    """Build (and optionally save) the tiny Qwen2-style tokenizer.

    Deterministic: the same corpus and settings give the same vocabulary.
    Sa2VA's own tokens (``[SEG]``, ``<p>``, ...) are **not** included; add
    them with :func:`add_special_tokens` as for a real checkpoint.

    Args:
        save_dir: if given, the tokenizer is saved there as a transformers
            tokenizer directory and reloaded from it (the path a config
            names as ``tokenizer_path``).
        vocab_size: BPE vocabulary size including the byte alphabet and the
            added tokens.
        image_tokens: ``'internvl'`` (template tokens + InternVL's image
            tokens) or ``'qwen_vl'`` (Qwen2.5-VL's special tokens only), a
            key of :data:`TINY_SPECIAL_TOKENS`.

    Returns:
        ``transformers.Qwen2TokenizerFast`` with ``eos_token = pad_token =
        '<|endoftext|>'`` and no BOS token.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from tokenizers import trainers
    from transformers import Qwen2TokenizerFast

    if image_tokens not in TINY_SPECIAL_TOKENS:
        raise KeyError(f'unknown image tokens {image_tokens!r}; one of '
                       f'{sorted(TINY_SPECIAL_TOKENS)}')
    special = list(TINY_SPECIAL_TOKENS[image_tokens])
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX),
                             behavior='isolated', invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=1, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=special)
    tok.train_from_iterator(_tiny_corpus(), trainer=trainer)
    fast = Qwen2TokenizerFast(tokenizer_object=tok,
                              eos_token='<|endoftext|>',
                              pad_token='<|endoftext|>',
                              unk_token=None, bos_token=None)
    fast.add_special_tokens({'additional_special_tokens': special[1:]})
    if save_dir is None:
        return fast
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(save_dir))
    return load_tokenizer(save_dir)


def load_tokenizer(path: str | os.PathLike, trust_remote_code: bool = True):
    """Load a tokenizer directory with ``AutoTokenizer``."""
    from transformers import AutoTokenizer

    from .downloads import require_local
    require_local(path, 'tokenizer')
    return AutoTokenizer.from_pretrained(
        str(path), trust_remote_code=trust_remote_code)


def add_special_tokens(tokenizer,
                       tokens=SA2VA_SPECIAL_TOKENS) -> dict[str, int]:
    """Add Sa2VA's tokens (``[SEG]``, ``<p>``, ``</p>``, ``<vp>``, ``</vp>``).

    Idempotent: tokens already in the vocabulary are not added again (so
    calling it on a Sa2VA tokenizer, or twice, changes nothing). The model
    must resize its embeddings to ``len(tokenizer)`` once afterwards.

    Returns:
        ``{token: id}`` for every token in ``tokens``.
    """
    vocab = tokenizer.get_vocab()
    missing = [t for t in tokens if t not in vocab]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    return {t: tokenizer.convert_tokens_to_ids(t) for t in tokens}


def single_token_id(tokenizer, token: str) -> int:
    """Id of ``token``, which must encode to exactly one id.

    Raises:
        ValueError: the tokenizer splits ``token`` (it was never added).
    """
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(
            f'token {token!r} is not a single token of this tokenizer '
            f'(encodes to {len(ids)} ids); add it first with '
            f'projects.sa2va.tokenization.add_special_tokens or use the '
            f'tokenizer of the backbone\'s checkpoint (InternVL or Qwen-VL, '
            f'matching image_tokens)')
    return ids[0]
