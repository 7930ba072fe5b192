"""Family 5, VQA: LLaVA-Instruct (images and text-only records) and
Chat-UniVi video chat (``docs/datasets.md``).

Text forms, token for token as Sa2VA v1:

* LLaVA (v1 ``LLaVADataset.get_inputid_labels``): leading ``gpt`` turns are
  dropped; every human turn is stripped of surrounding whitespace and
  consecutive human turns are concatenated; every ``gpt`` turn (stripped)
  closes a pair (a ``gpt`` turn right after another one gets an empty
  question); a trailing question without answer is dropped. ``<image>``
  stays **where it stands** (``"Q\\n<image>"`` becomes ``"Q\\n<img>...</img>"``);
  text-only records lose every ``<image>``. v1 encodes these pairs with its
  own loop, not xtuner's ``encode_fn``: no ``SEP`` between turns and no
  EOS after an answer beyond the template's ``SUFFIX``
  (:class:`EncodeLLaVAConversation`).
* Chat-UniVi (v1 ``VideoChatUniViDataset``): the i-th human turn (with
  ``<image>`` removed, not stripped) pairs with the i-th ``gpt`` turn; the
  first question is preceded by the frame blocks with no separator. v1
  leaves the literal ``<video>`` placeholder of the raw text (normally
  ``<video>\\n`` at the start of the first turn) in the question, and this
  loader does the same by default (``video_token='keep'``). Encoded with
  the ordinary :class:`EncodeConversation` (xtuner's rules, as v1's
  ``template_map_fn`` + ``video_lisa_encode_fn``).

Videos are decoded with OpenCV (decord, which v1 uses, is not installed):
see :mod:`projects.sa2va.transforms.video`.
"""
from __future__ import annotations

import os.path as osp
import warnings

from mmengine.logging import print_log
from PIL import Image

from ..constants import IMAGE_PLACEHOLDER, NUM_IMAGE_TOKENS, VIDEO_PLACEHOLDER
from ..registry import DATASETS, TRANSFORMS
from ..transforms import video as _video  # noqa: F401  (registers transforms)
from ..transforms.formatting import EncodeConversation
from ..transforms.text import get_template
from .base import (Sa2VABaseDataset, estimate_text_tokens, estimate_tiles,
                   first_text_defect, load_json)


def image_size_from_header(path: str) -> tuple[int, int] | None:
    """``(width, height)`` read from the file header (no pixel decoding);
    None if the file is missing or unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return img.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def _load_json_list(path: str) -> list:
    records = load_json(path)
    if not isinstance(records, list):
        raise ValueError(f'{path}: expected a JSON list of records, got '
                         f'{type(records).__name__}')
    return records


def _where(path: str, i: int, record) -> str:
    rid = record.get('id') if isinstance(record, dict) else None
    return f'{path}: record {i} (id {rid!r})'


def _turns(record: dict, where: str) -> list[tuple[str, str]]:
    turns = record.get('conversations') if isinstance(record, dict) else None
    if not isinstance(turns, list):
        raise ValueError(f'{where}: needs a "conversations" list')
    out = []
    for i, turn in enumerate(turns):
        role = turn.get('from') if isinstance(turn, dict) else None
        value = turn.get('value') if isinstance(turn, dict) else None
        if role not in ('human', 'gpt'):
            raise ValueError(f'{where}: turn {i} has unknown role {role!r} '
                             f'(expected "human" or "gpt")')
        if not isinstance(value, str):
            raise ValueError(f'{where}: turn {i} has no string "value"')
        out.append((role, value))
    return out


def llava_conversation(turns: list[tuple[str, str]], has_image: bool
                       ) -> list[dict]:
    """Sa2VA v1 LLaVA pairs from ``(role, value)`` turns (module docstring).

    Returns:
        ``[{'input': str, 'output': str}, ...]``; ``<image>`` kept in place
        when ``has_image`` (replaced by the image block later), removed
        otherwise.
    """
    start = 0
    while start < len(turns) and turns[start][0] == 'gpt':
        start += 1
    pairs, pending = [], ''
    for role, value in turns[start:]:
        if role == 'human':
            if not has_image:
                value = value.replace(IMAGE_PLACEHOLDER, '')
            pending += value.strip()
        else:
            pairs.append(dict(input=pending, output=value.strip()))
            pending = ''
    return pairs


@TRANSFORMS.register_module()
class EncodeLLaVAConversation(EncodeConversation):
    """:class:`EncodeConversation` with Sa2VA v1 LLaVA's encoding loop.

    v1's ``LLaVADataset`` encodes ``INSTRUCTION.format(input)`` (tokenizer
    BOS on the first turn only) and ``output + SUFFIX`` per turn, and
    nothing else: no ``SEP`` after a turn, no EOS beyond the suffix. This is
    the template with ``SEP = ''`` and ``SUFFIX_AS_EOS = True``.

    Args: as :class:`EncodeConversation`.

    Required / Added Keys: as :class:`EncodeConversation`.
    """

    def __init__(self, tokenizer, template='internvl2_5', **kwargs):
        template = dict(get_template(template), SEP='', SUFFIX_AS_EOS=True)
        super().__init__(tokenizer, template, **kwargs)


@DATASETS.register_module()
class LLaVADataset(Sa2VABaseDataset):
    """LLaVA-Instruct conversations (``llava_v1_5_mix665k.json``).

    On disk: one JSON list of ``{'id', 'image'?, 'conversations'}``;
    ``image`` is relative to ``data_prefix['img_path']``; records without
    ``image`` are text-only (kept; the collate function gives them a dummy
    tile with ``image_flags`` 0, as Sa2VA's zero ``pixel_values``).

    Each record becomes ``conversation`` (pairs, :func:`llava_conversation`),
    ``img_path`` (or none) and its length estimate. Pipeline: ``LoadImage
    (allow_text_only=True)``, ``DynamicTiles``, ``ImagesToTensor``,
    :class:`EncodeLLaVAConversation`, ``PackInputs``.

    An image record whose human turns have no ``<image>`` gets ``<image>\\n``
    in front of the first question (v1 would leave the image tokens out,
    which the model cannot use); such records are counted in the log.

    Args:
        max_num_tiles: tiling limit used for the length estimate (match the
            pipeline's ``DynamicTiles``).
        read_image_headers: read each image's header for the tile estimate
            when building the index (one small read per image); ``False``
            assumes one full set of tiles (``max_num_tiles + 1``).
        **kwargs: see :class:`Sa2VABaseDataset`.

    Raises (at load): ValueError naming the file and record for a record
    without a conversations list, an unknown role, or no question/answer
    pair.
    """

    def __init__(self, *args, max_num_tiles: int = 12,
                 read_image_headers: bool = True, **kwargs):
        self.max_num_tiles = max_num_tiles
        self.read_image_headers = read_image_headers
        kwargs.setdefault('data_prefix', dict(img_path=''))
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> list[dict]:
        records = _load_json_list(self.ann_file)
        out, no_placeholder = [], 0
        for i, rec in enumerate(records):
            where = _where(self.ann_file, i, rec)
            has_image = bool(rec.get('image')) if isinstance(rec, dict) \
                else False
            conv = llava_conversation(_turns(rec, where), has_image)
            if not conv:
                raise ValueError(f'{where} has no question/answer pair')
            info = dict(record_id=str(rec.get('id', i)))
            if has_image and not isinstance(rec['image'], str):
                raise ValueError(f'{where}: "image" must be a file name, '
                                 f'got {rec["image"]!r}')
            bad = first_text_defect(
                [(f'{where} question {k}', t['input'])
                 for k, t in enumerate(conv)],
                allow=(IMAGE_PLACEHOLDER,) if has_image else ()) or \
                first_text_defect((f'{where} answer {k}', t['output'])
                                  for k, t in enumerate(conv))
            if bad:
                info['record_error'] = bad
            if has_image:
                if not any(IMAGE_PLACEHOLDER in t['input'] for t in conv):
                    conv[0]['input'] = IMAGE_PLACEHOLDER + '\n' + \
                        conv[0]['input']
                    no_placeholder += 1
                path = osp.join(self.data_prefix['img_path'], rec['image'])
                info['img_path'] = path
                size = image_size_from_header(path) \
                    if self.read_image_headers else None
                info['num_tiles_estimate'] = (
                    estimate_tiles(*size, max_num=self.max_num_tiles)
                    if size else self.max_num_tiles + 1)
            else:
                info['num_tiles_estimate'] = 0
            info['conversation'] = conv
            info['text_tokens_estimate'] = estimate_text_tokens(
                ''.join(t['input'] + t['output'] for t in conv))
            out.append(info)
        if no_placeholder:
            print_log(f'{self.dataset_name}: {no_placeholder} image records '
                      f'without <image> got one in front of the first '
                      f'question ({self.ann_file})', logger='current')
        return out

    def modality_length_of(self, info: dict) -> int:
        text = info['text_tokens_estimate']
        tiles = info['num_tiles_estimate']
        return text + NUM_IMAGE_TOKENS * tiles if tiles else -text


VIDEO_TOKEN_MODES = ('keep', 'strip')


def chat_univi_conversation(turns: list[tuple[str, str]],
                            video_token: str = 'keep') -> list[dict]:
    """Sa2VA v1 Chat-UniVi pairs from ``(role, value)`` turns.

    The i-th human value (``<image>`` removed) pairs with the i-th ``gpt``
    value; the first input is ``<image>`` + first question (the frame
    blocks go there). ``video_token='keep'`` leaves ``<video>`` as text (v1);
    ``'strip'`` removes every ``<video>\\n`` and ``<video>`` (our option,
    not a Sa2VA form).

    Raises:
        ValueError: different numbers of human and gpt turns (v1 asserts),
            or none.
    """
    if video_token not in VIDEO_TOKEN_MODES:
        raise ValueError(f'video_token must be one of {VIDEO_TOKEN_MODES}, '
                         f'got {video_token!r}')
    questions = [v.replace(IMAGE_PLACEHOLDER, '') for r, v in turns
                 if r == 'human']
    answers = [v for r, v in turns if r == 'gpt']
    if len(questions) != len(answers) or not questions:
        raise ValueError(f'{len(questions)} human and {len(answers)} gpt '
                         f'turns (need equal, at least one)')
    if video_token == 'strip':
        questions = [q.replace(VIDEO_PLACEHOLDER + '\n', '')
                     .replace(VIDEO_PLACEHOLDER, '') for q in questions]
    conv = [dict(input=q, output=a) for q, a in zip(questions, answers)]
    conv[0]['input'] = IMAGE_PLACEHOLDER + conv[0]['input']
    return conv


@DATASETS.register_module()
class ChatUniViDataset(Sa2VABaseDataset):
    """Chat-UniVi video chat (``video_chat.json`` + ``Activity_Videos/``).

    On disk: a JSON list of ``{'id', 'video', 'conversations'}``; ``video``
    is a file name under ``data_prefix['video_path']`` (``.mkv`` or
    ``.mp4``; the pipeline falls back from a missing ``.mkv`` to the
    ``.mp4`` of the same name, as v1).

    Per record: ``record_id``, ``video_path``, ``conversation``
    (:func:`chat_univi_conversation`), ``text_tokens_estimate``. Pipeline:
    ``SampleVideoFrames(rule='segments')`` (5 frames: one random frame per
    equal segment; all frames of a video of at most 5),
    ``LoadVideoFrames``, ``ImagesToTensor(key='frames')``,
    ``EncodeConversation``, ``PackInputs``. Output: ``pixel_values (T, 3,
    448, 448)``, ``input_ids``, ``labels``; no masks, no ``g_pixel_values``.
    One frame block per frame decoded (v1 always writes 5 blocks, even for a
    shorter video, where its tokens and frames disagree).

    Args:
        sampled_frames: frames per sample, for the length estimate (match
            the pipeline's ``SampleVideoFrames``).
        video_token: see :func:`chat_univi_conversation`.
        **kwargs: see :class:`Sa2VABaseDataset`.

    Raises (at load): ValueError naming the file and record for a record
    without a string ``video``, a malformed turn list, or unequal numbers of
    human and gpt turns.
    """

    def __init__(self, *args, sampled_frames: int = 5,
                 video_token: str = 'keep', **kwargs):
        self.sampled_frames = sampled_frames
        self.video_token = video_token
        kwargs.setdefault('data_prefix', dict(video_path=''))
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> list[dict]:
        records = _load_json_list(self.ann_file)
        root = self.data_prefix.get('video_path', '')
        out = []
        for i, rec in enumerate(records):
            where = _where(self.ann_file, i, rec)
            if not isinstance(rec, dict) or not isinstance(rec.get('video'),
                                                           str):
                raise ValueError(f'{where}: needs a string "video"')
            try:
                conv = chat_univi_conversation(_turns(rec, where),
                                               self.video_token)
            except ValueError as exc:
                raise ValueError(f'{where}: {exc}') from None
            info = dict(
                record_id=str(rec.get('id', i)),
                video_path=osp.join(root, rec['video']),
                conversation=conv,
                text_tokens_estimate=estimate_text_tokens(
                    ''.join(t['input'] + t['output'] for t in conv)))
            bad = first_text_defect(
                [(f'{where} question {k}', t['input'])
                 for k, t in enumerate(conv)], allow=(IMAGE_PLACEHOLDER,)) \
                or first_text_defect((f'{where} answer {k}', t['output'])
                                     for k, t in enumerate(conv))
            if bad:
                info['record_error'] = bad
            out.append(info)
        return out

    def modality_length_of(self, info: dict) -> int:
        return info['text_tokens_estimate'] + \
            NUM_IMAGE_TOKENS * self.sampled_frames
