"""Conversations -> ``input_ids`` / ``labels``, token for token as Sa2VA.

Sa2VA builds one string per turn (chat template around the question, image
blocks spelled out as ``<img><IMG_CONTEXT>...</img>``, or with a Qwen-VL
backbone ``<|vision_start|><|image_pad|>...<|vision_end|>``: the strings are
backbone data, :data:`~projects.sa2va.constants.IMAGE_TOKENS`, chosen by
``image_tokens='internvl' | 'qwen_vl'``) and tokenises it with
xtuner's ``encode_fn`` rules. We produce the same ids without building or
tokenising strings of thousands of ``<IMG_CONTEXT>``: inside our strings a
run of ``n`` context tokens is the marker ``<IMG_CONTEXT*n>``
(:func:`context_run`, whatever the backbone), split out before tokenisation
and replaced by ``n`` ids of the backbone's context token. Every run sits
between special tokens (``<img>``/``</img>``,
``<vp>``/``</vp>``), where a tokenizer splits anyway, so the ids are those of
the spelled-out string (tested against it).

Encoding rules (xtuner ``template_map_fn`` + ``encode_fn``; the templates
and BOS/EOS rules are data in :mod:`.chat_templates`):

* turn ``i``: ``INSTRUCTION.format(input=..., round=i + 1)``, prefixed by
  ``SYSTEM.format(system=...)`` on the first turn when a system prompt is
  set; the output gets ``SUFFIX``; ``SEP`` follows every turn;
* BOS (if the tokenizer family has one) before a turn that follows an EOS;
  an EOS after the output unless ``SUFFIX_AS_EOS``;
* labels: -100 on BOS, inputs and SEP; outputs (with suffix, EOS) supervised.

Our deliberate difference: ``max_length`` never cuts a turn (Sa2VA cuts the
ids mid-turn, possibly inside an image block). Whole trailing turns are
dropped; if the first turn alone does not fit, :class:`SampleRejected` is
raised for the dataset to log, count and skip.
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

from ..constants import (IGNORE_INDEX, NUM_IMAGE_TOKENS, SEG_TOKEN,
                         VP_END_TOKEN, VP_START_TOKEN)
from ..constants import image_tokens as _image_tokens
from .chat_templates import (PROMPT_TEMPLATES, TEMPLATE_ALIASES,
                             get_bos_eos_token_ids)

__all__ = [
    'SampleRejected', 'context_run', 'image_block', 'video_block',
    'get_template', 'ConversationEncoder', 'conversation_from_turns',
    'collapse_image_tokens', 'INTERNVL2_5_SYSTEM'
]

_RUN_RE = re.compile(r'<IMG_CONTEXT\*(\d+)>')

#: InternVL2.5's default system message (used by its own chat template).
INTERNVL2_5_SYSTEM = ('你是书生·万象，英文名是InternVL，是由上海人工智能实验室、'
                      '清华大学及多家合作单位联合开发的多模态大语言模型。')


class SampleRejected(ValueError):
    """A sample that cannot be used; ``reason`` is a short counter key."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def context_run(n: int) -> str:
    """Marker for ``n`` consecutive ``<IMG_CONTEXT>`` tokens."""
    n = int(n)
    if n < 0:
        raise ValueError(f'context run length must be >= 0, got {n}')
    return f'<IMG_CONTEXT*{n}>' if n else ''


def image_block(num_tiles: int, tokens_per_tile: int = NUM_IMAGE_TOKENS,
                image_tokens: str = 'internvl') -> str:
    """``<img>`` + ``<IMG_CONTEXT>`` x (tokens_per_tile * num_tiles) +
    ``</img>`` (one block for all tiles of an image, thumbnail included);
    ``image_tokens='qwen_vl'``: ``<|vision_start|>`` + run + ``<|vision_end|>``
    (the run stays the compact marker, expanded to ids by the encoder)."""
    if num_tiles < 1:
        raise ValueError(f'an image block needs >= 1 tile, got {num_tiles}')
    start, _, end = _image_tokens(image_tokens)
    return start + context_run(tokens_per_tile * num_tiles) + end


def video_block(num_frames: int, tokens_per_frame: int = NUM_IMAGE_TOKENS,
                sep: str = '\n', image_tokens: str = 'internvl') -> str:
    """One image block per frame (:func:`image_block`), joined by ``sep``."""
    if num_frames < 1:
        raise ValueError(f'a video block needs >= 1 frame, got {num_frames}')
    return sep.join([image_block(1, tokens_per_frame, image_tokens)]
                    * num_frames)


def collapse_image_tokens(text: str, image_tokens: str = 'internvl') -> str:
    """Readable form of decoded text: runs of ``<IMG_CONTEXT>`` (spelled out
    or as markers) become ``[256 x 13]``-style counts.

    Args:
        text: decoded text.
        image_tokens: the backbone's image tokens (a key of
            :data:`~projects.sa2va.constants.IMAGE_TOKENS`).

    Returns:
        the same text with ``<img>[256 x 13]</img>`` for a 13-tile image and
        ``<vp>[K]</vp>`` for a region of ``K`` tokens (Qwen-VL:
        ``<|vision_start|>[n]<|vision_end|>``).
    """
    start, ctx, end = _image_tokens(image_tokens)
    text = _RUN_RE.sub(lambda m: ctx * int(m.group(1)), text)
    run = f'((?:{re.escape(ctx)})*)'

    def _img(match):
        n = match.group(1).count(ctx)
        tiles, rest = divmod(n, NUM_IMAGE_TOKENS)
        inner = (f'[{NUM_IMAGE_TOKENS} x {tiles}]'
                 if rest == 0 and image_tokens == 'internvl' else f'[{n}]')
        return start + inner + end

    text = re.sub(re.escape(start) + run + re.escape(end), _img, text)
    return re.sub(
        re.escape(VP_START_TOKEN) + run + re.escape(VP_END_TOKEN),
        lambda m: VP_START_TOKEN + f'[{m.group(1).count(ctx)}]'
        + VP_END_TOKEN, text)


def get_template(template) -> dict:
    """A chat template as a dict with xtuner's fields.

    Args:
        template: a name from :data:`~.chat_templates.PROMPT_TEMPLATES`
            (``'phi3_chat'``, ``'qwen_chat'``, ``'internlm2_chat'``) or an
            alias (``'internvl2_5'`` = ``qwen_chat``), or a dict with
            ``INSTRUCTION`` and optional ``SYSTEM``, ``SUFFIX``,
            ``SUFFIX_AS_EOS``, ``SEP``, ``STOP_WORDS``.

    Returns:
        a new dict (``STOP_WORDS`` as a list).
    """
    if isinstance(template, Mapping):
        out = dict(template)
    elif isinstance(template, str):
        name = TEMPLATE_ALIASES.get(template, template)
        if name not in PROMPT_TEMPLATES:
            raise KeyError(f'unknown chat template {template!r}; known: '
                           f'{sorted(PROMPT_TEMPLATES)} and aliases '
                           f'{sorted(TEMPLATE_ALIASES)}, or pass a dict')
        out = {k: list(v) if isinstance(v, tuple) else v
               for k, v in PROMPT_TEMPLATES[name].items()}
    else:
        raise TypeError(f'template must be a name or a dict, got '
                        f'{type(template).__name__}')
    if 'INSTRUCTION' not in out or '{input}' not in out['INSTRUCTION']:
        raise ValueError('a chat template needs an INSTRUCTION with {input}')
    return out


def conversation_from_turns(turns: Sequence[Mapping]) -> list[dict]:
    """LLaVA-style turns -> ``[{'input': str, 'output': str}, ...]``.

    Sa2VA's rule: leading ``gpt`` turns are dropped, consecutive ``human``
    turns are concatenated with no separator, each ``gpt`` turn closes a
    pair. A trailing ``human`` turn without answer is dropped.

    Args:
        turns: ``[{'from': 'human' | 'gpt', 'value': str}, ...]``.
    """
    pairs, pending = [], None
    for i, turn in enumerate(turns):
        role, value = turn.get('from'), turn.get('value')
        if not isinstance(value, str):
            raise ValueError(f'turn {i} has no string "value"')
        if role == 'human':
            pending = value if pending is None else pending + value
        elif role == 'gpt':
            if pending is None:
                continue
            pairs.append(dict(input=pending, output=value))
            pending = None
        else:
            raise ValueError(f'turn {i} has unknown role {role!r} '
                             f'(expected "human" or "gpt")')
    return pairs


class ConversationEncoder:
    """Encodes conversations for one tokenizer and chat template.

    Args:
        tokenizer: a transformers tokenizer holding the backbone's image
            tokens and Sa2VA's special tokens (see
            :func:`projects.sa2va.tokenization.add_special_tokens`).
        template: see :func:`get_template`.
        max_length: maximum ids per sample (whole turns are dropped to fit).
        system: system prompt for the first turn ('' = none, as Sa2VA).
        image_tokens: ``'internvl'`` (``<img>``, ``<IMG_CONTEXT>``,
            ``</img>``) or ``'qwen_vl'`` (``<|vision_start|>``,
            ``<|image_pad|>``, ``<|vision_end|>``): context runs become ids
            of that context token.
    """

    def __init__(self, tokenizer, template='internvl2_5',
                 max_length: int = 8192, system: str = '',
                 image_tokens: str = 'internvl'):
        from ..tokenization import single_token_id
        self.tokenizer = tokenizer
        self.template = get_template(template)
        self.max_length = int(max_length)
        self.system = system or ''
        self.bos_ids, self.eos_ids = get_bos_eos_token_ids(tokenizer)
        if self.bos_ids is None:
            self.bos_ids = []
        if self.eos_ids is None:
            self.eos_ids = []
        self.image_tokens = image_tokens
        start, ctx, end = _image_tokens(image_tokens)
        self.context_id = single_token_id(tokenizer, ctx)
        self.special_ids = {
            t: single_token_id(tokenizer, t)
            for t in (start, end, ctx, SEG_TOKEN, VP_START_TOKEN,
                      VP_END_TOKEN)
        }

    # -- strings -> ids ----------------------------------------------------
    def encode_text(self, text: str) -> list[int]:
        """Tokenise ``text``, expanding ``<IMG_CONTEXT*n>`` runs to ids.

        Returns:
            list of token ids (no BOS/EOS added).
        """
        ids: list[int] = []
        pos = 0
        for match in _RUN_RE.finditer(text):
            if match.start() > pos:
                ids += self.tokenizer.encode(text[pos:match.start()],
                                             add_special_tokens=False)
            ids += [self.context_id] * int(match.group(1))
            pos = match.end()
        if pos < len(text):
            ids += self.tokenizer.encode(text[pos:], add_special_tokens=False)
        return ids

    def turn_texts(self, conversation: Sequence[Mapping]
                   ) -> list[tuple[str, str, str]]:
        """Template strings of each turn: ``(input, output, sep)``."""
        t = self.template
        texts = []
        for i, turn in enumerate(conversation):
            query = turn.get('input') or ''
            text_in = t['INSTRUCTION'].format(input=query, round=i + 1)
            if i == 0 and self.system and t.get('SYSTEM'):
                text_in = t['SYSTEM'].format(system=self.system) + text_in
            text_out = (turn.get('output') or '') + (t.get('SUFFIX') or '')
            texts.append((text_in, text_out, t.get('SEP') or ''))
        return texts

    def encode(self, conversation: Sequence[Mapping]) -> dict:
        """Encode ``[{'input': str, 'output': str}, ...]``.

        Returns:
            dict with ``input_ids`` and ``labels`` (lists of ints, same
            length <= ``max_length``; labels -100 except on outputs) and
            ``num_turns`` (turns kept), ``num_turns_dropped``.

        Raises:
            SampleRejected: empty conversation (``'no_turns'``) or first turn
                longer than ``max_length`` (``'too_long'``).
        """
        if not conversation:
            raise SampleRejected('no_turns', 'conversation has no '
                                 'question/answer pair')
        suffix_as_eos = bool(self.template.get('SUFFIX_AS_EOS', False))
        input_ids: list[int] = []
        labels: list[int] = []
        needs_bos = True
        kept = 0
        for text_in, text_out, sep in self.turn_texts(conversation):
            ids, lab = [], []
            if needs_bos and self.bos_ids:
                ids += self.bos_ids
                lab += [IGNORE_INDEX] * len(self.bos_ids)
            enc_in = self.encode_text(text_in)
            ids += enc_in
            lab += [IGNORE_INDEX] * len(enc_in)
            enc_out = self.encode_text(text_out)
            ids += enc_out
            lab += enc_out
            if not suffix_as_eos:
                ids += self.eos_ids
                lab += self.eos_ids
                next_needs_bos = True
            else:
                next_needs_bos = False
            if sep:
                enc_sep = self.encode_text(sep)
                ids += enc_sep
                lab += [IGNORE_INDEX] * len(enc_sep)
            if len(input_ids) + len(ids) > self.max_length:
                if kept == 0:
                    raise SampleRejected(
                        'too_long',
                        f'the first turn alone has {len(ids)} tokens, more '
                        f'than max_length={self.max_length}')
                break
            input_ids += ids
            labels += lab
            needs_bos = next_needs_bos
            kept += 1
        return dict(input_ids=input_ids, labels=labels, num_turns=kept,
                    num_turns_dropped=len(conversation) - kept)

    def decode(self, input_ids: Sequence[int], collapse: bool = True) -> str:
        """Ids -> text, image runs collapsed for reading."""
        text = self.tokenizer.decode(list(input_ids),
                                     skip_special_tokens=False)
        return collapse_image_tokens(text, self.image_tokens) if collapse \
            else text
