"""Base class of every Sa2VA dataset: compact index, pipeline, bad records.

Built on mmengine's :class:`~mmengine.dataset.BaseDataset`:

* ``load_data_list()`` (per family) parses the annotation index once;
  ``serialize_data=True`` packs it into one numpy byte buffer plus offsets,
  shared by forked dataloader workers instead of copied per process;
* ``modality_length`` is an int32 array estimated from the index when it is
  built (text tokens + 256 x tiles/frames; negative for text-only samples),
  for the length-grouped sampler;
* the pipeline is a list of transforms from the plugin's ``TRANSFORMS``
  registry (config dicts, or objects);
* a bad record (a transform raises :class:`RecordError`) is logged with the
  dataset, index and reason, counted, and replaced by the next record in a
  seeded random order; the returned sample carries the count in
  ``data_stats['skipped/<reason>']`` so the training log shows it. More than
  ``max_bad_fraction`` bad records (after ``min_bad_checks`` tries) raise.
  A record found bad while the index is built (data text holding a
  special-token string, lone surrogates, ...) carries ``record_error =
  (reason, message)`` and is counted and replaced the same way when drawn
  (``tools/check_data.py`` lists it too).
"""
from __future__ import annotations

import json
import math
import pickle
import re
from array import array
from typing import Callable, Iterator, Sequence

import numpy as np
from mmengine.dataset import BaseDataset
from mmengine.logging import print_log

from ..constants import NUM_IMAGE_TOKENS
from ..registry import TRANSFORMS
from ..transforms.base import RecordError, bump


def build_pipeline(pipeline: Sequence) -> list[Callable]:
    """Transforms from config dicts (plugin registry) or callables."""
    out = []
    for t in pipeline or []:
        if isinstance(t, dict):
            out.append(TRANSFORMS.build(t))
        elif callable(t):
            out.append(t)
        else:
            raise TypeError(f'pipeline step must be a dict or callable, '
                            f'got {type(t).__name__}')
    return out


def iter_json_array(path: str, chunk_size: int = 1 << 24) -> Iterator:
    """Yield the elements of a JSON file holding one top-level list, one at
    a time, reading ``chunk_size`` characters at a time.

    Memory stays at one element plus about one chunk, instead of the whole
    parsed file (a 1.3 GB annotation list is several times that as Python
    objects).

    Raises:
        ValueError: the file is not a JSON list, or is malformed (the
            message names the file and the character offset).
    """
    decoder = json.JSONDecoder()
    whitespace = ' \t\r\n'
    with open(path, encoding='utf-8') as f:
        state = dict(buf='', pos=0, base=0, eof=False)

        def fill() -> bool:
            try:
                more = f.read(chunk_size)
            except UnicodeDecodeError as exc:
                raise ValueError(f'{path}: not UTF-8 text near byte '
                                 f'{exc.start}: {exc.reason}') from None
            if not more:
                state['eof'] = True
                return False
            state['base'] += state['pos']
            state['buf'] = state['buf'][state['pos']:] + more
            state['pos'] = 0
            return True

        def peek():
            while True:
                buf, pos = state['buf'], state['pos']
                while pos < len(buf) and buf[pos] in whitespace:
                    pos += 1
                state['pos'] = pos
                if pos < len(buf):
                    return buf[pos]
                if not fill():
                    return None

        def where() -> str:
            return f'{path}: character {state["base"] + state["pos"]}'

        if peek() != '[':
            raise ValueError(f'{path}: expected a JSON list at the top level')
        state['pos'] += 1
        if peek() == ']':
            return
        while True:
            if peek() is None:
                raise ValueError(f'{path}: unexpected end of file (the list '
                                 f'is not closed)')
            while True:
                try:
                    value, end = decoder.raw_decode(state['buf'],
                                                    state['pos'])
                except json.JSONDecodeError as exc:
                    if fill():
                        continue
                    raise ValueError(
                        f'{path}: malformed JSON at character '
                        f'{state["base"] + exc.pos}: {exc.msg}') from None
                # A top-level number may continue in the next chunk.
                if isinstance(value, (int, float)) and not state['eof'] and (
                        end == len(state['buf'])
                        or state['buf'][end] in '0123456789.eE+-') and fill():
                    continue
                break
            yield value
            state['pos'] = end
            c = peek()
            if c == ']':
                return
            if c is None:
                raise ValueError(f'{path}: unexpected end of file (the list '
                                 f'is not closed)')
            if c != ',':
                raise ValueError(f'{where()}: expected "," or "]"')
            state['pos'] += 1
            if state['pos'] > chunk_size:
                state['base'] += state['pos']
                state['buf'] = state['buf'][state['pos']:]
                state['pos'] = 0


def load_json(path: str):
    """Parse a whole JSON annotation file.

    Raises:
        ValueError: the file is empty (zero bytes), truncated, not valid
            JSON or not UTF-8; the message names the file (and the
            position for malformed JSON).
        FileNotFoundError / OSError: the file cannot be opened.
    """
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        what = 'empty file' if exc.doc == '' else 'malformed JSON'
        raise ValueError(f'{path}: {what} (truncated or not JSON) at line '
                         f'{exc.lineno} column {exc.colno}: {exc.msg}'
                         ) from None
    except UnicodeDecodeError as exc:
        raise ValueError(f'{path}: not UTF-8 text at byte {exc.start}: '
                         f'{exc.reason}') from None
    except RecursionError:
        raise ValueError(f'{path}: JSON nested too deeply') from None


#: Strings a tokenizer turns into control tokens (Sa2VA's added tokens,
#: InternVL's image tokens, the compact context-run marker, and the chat
#: templates' role/end tokens): data text holding one would silently become
#: a control token (or break the image-token count of the model), so such a
#: record is rejected (``control_token_text``).
CONTROL_TEXT_RE = re.compile(
    r'\[SEG\]|</?(?:p|vp|img|quad|ref|box|s)>|<IMG_CONTEXT|<FAST_IMG_CONTEXT'
    r'|</?fast_img>|<\|[^|<>\s]{1,40}\|>|<image>')


def text_defect(text, where: str, allow=()) -> tuple[str, str] | None:
    """Why a piece of data text cannot be encoded, or None.

    Args:
        text: the raw text of the record (before templates are applied).
        where: what the text is (``'expression 2'``), for the message.
        allow: control strings that are legal here (``('<image>',)`` for a
            LLaVA question, where it marks the image).

    Returns:
        ``(reason, message)``: ``('bad_text', ...)`` for a non-string or
        text with lone surrogates (undecodable), ``('control_token_text',
        ...)`` for text holding a special-token string (``[SEG]``,
        ``<IMG_CONTEXT>``, ``<img>``, ``</img>``, ``<vp>``, ``<p>``,
        ``<|im_end|>``, ...); None when the text is fine.
    """
    if not isinstance(text, str):
        return 'bad_text', f'{where} is {type(text).__name__}, not a string'
    try:
        text.encode('utf-8')
    except UnicodeEncodeError as exc:
        return 'bad_text', (f'{where} holds undecodable text (lone '
                            f'surrogate {text[exc.start]!r} at {exc.start})')
    for m in CONTROL_TEXT_RE.finditer(text):
        if m.group(0) not in allow:
            return 'control_token_text', (
                f'{where} contains the special-token string '
                f'{m.group(0)!r}; it would become a control token')
    return None


def first_text_defect(texts, allow=()) -> tuple[str, str] | None:
    """The first :func:`text_defect` of ``(where, text)`` pairs, or None."""
    for where, text in texts:
        bad = text_defect(text, where, allow)
        if bad:
            return bad
    return None


def stated_size_defect(height, width, where: str
                       ) -> tuple[str, str] | None:
    """Why an annotation's stated image size cannot be decoded at, or None.

    Masks of Osprey / RefCOCO records are decoded at the size the
    annotation states; a size over PIL's decompression-bomb limit
    (``Image.MAX_IMAGE_PIXELS``, or 2**31 pixels when disabled) would
    allocate that many bytes per object before any image is read.

    Returns:
        ``('bad_size', message)`` or None.
    """
    from PIL import Image
    limit = Image.MAX_IMAGE_PIXELS or 2 ** 31
    if height <= 0 or width <= 0 or height * width > limit:
        return 'bad_size', (f'{where}: stated image size {height}x{width} '
                            f'is not positive or over {limit} pixels')
    return None


def estimate_text_tokens(text: str) -> int:
    """Rough token count of English text (about 4 characters per token).

    Used only for length grouping, where the order of magnitude matters;
    computed from the annotation, never by tokenising every record.
    """
    return max(1, math.ceil(len(text) / 4))


def estimate_tiles(width: int, height: int, max_num: int = 12,
                   min_num: int = 1, use_thumbnail: bool = True) -> int:
    """Tiles InternVL's dynamic tiling gives an image of this size."""
    from ..transforms.functional import find_closest_grid
    if width <= 0 or height <= 0:
        return 1
    cols, rows = find_closest_grid(width, height, min_num, max_num)
    n = cols * rows
    return n + 1 if use_thumbnail and n > 1 else n


class Sa2VABaseDataset(BaseDataset):
    """Common machinery of the six families (see module docstring).

    Subclasses implement ``load_data_list()`` returning dicts with at least
    the keys their pipeline needs, and ``modality_length_of(info)``.

    Args:
        pipeline: transforms (dicts or callables).
        dataset_name: name used in logs and counters (default: class name).
        max_bad_fraction: raise when more than this fraction of the records
            tried in one process are bad.
        min_bad_checks: records tried before the fraction is enforced.
        max_refetch: bad records tried in a row before raising.
        seed: base of the per-sample random generator
            (``results['rng'] = np.random.default_rng([seed, idx])``), used by
            transforms for their random choices (question templates, frame
            and object sampling), so a sample is reproducible from its index.
            A repeated copy of the sample in a :class:`~projects.sa2va.
            datasets.mixing.MixedDataset` (``repeats``) is drawn with
            ``(seed, idx, draw)`` instead (:meth:`prepare_data`), so the
            copies differ as Sa2VA's repeats do, and each stays reproducible.
        **kwargs: mmengine ``BaseDataset`` arguments (``ann_file``,
            ``data_root``, ``data_prefix``, ``indices``, ``lazy_init``, ...).
    """

    def __init__(self, *args, pipeline: Sequence = (),
                 dataset_name: str | None = None,
                 max_bad_fraction: float = 0.05, min_bad_checks: int = 100,
                 max_refetch: int = 100, seed: int = 0, **kwargs):
        self.seed = int(seed)
        self.dataset_name = dataset_name or type(self).__name__
        self.max_bad_fraction = max_bad_fraction
        self.min_bad_checks = min_bad_checks
        self._tried = 0
        self._bad = 0
        self._modality_length: np.ndarray | None = None
        super().__init__(*args, pipeline=build_pipeline(pipeline),
                         max_refetch=max_refetch, **kwargs)

    # -- index --------------------------------------------------------------
    def modality_length_of(self, info: dict) -> int:
        """Token-length estimate of one record (override per family).

        Default: text tokens of ``info['text_for_length']`` (or 64) plus
        256 per tile in ``info['num_tiles_estimate']`` (0 = text only,
        returned negative).
        """
        text = estimate_text_tokens(info.get('text_for_length', '')) \
            if info.get('text_for_length') else 64
        tiles = int(info.get('num_tiles_estimate', 1))
        if tiles == 0:
            return -text
        return text + NUM_IMAGE_TOKENS * tiles

    def full_init(self):
        """Build the index: stream ``load_data_list()`` into the serialized
        buffer and the length array.

        ``load_data_list`` may return a list or yield records; with
        ``serialize_data`` (default) each record is pickled as it comes, so
        the whole index never exists as Python objects (a generator-based
        loader keeps the loading peak to one record plus the buffer).
        """
        if self._fully_initialized:
            return
        if not self.serialize_data or self._indices is not None or \
                self.filter_cfg:
            # mmengine's path, with the records materialised first.
            self.data_list = list(self.load_data_list())
            self.data_list = self.filter_data()
            if self._indices is not None:
                self.data_list = self._get_unserialized_subset(self._indices)
            if self.serialize_data:
                self.data_bytes, self.data_address = self._serialize_data()
            self._fully_initialized = True
            self._modality_length = self._lengths_from(
                self.get_data_info(i) for i in range(len(self)))
            return
        buffer = bytearray()
        ends = array('q')
        lengths = array('i')
        for info in self.load_data_list():
            lengths.append(self.modality_length_of(info))
            buffer += pickle.dumps(info, protocol=4)
            ends.append(len(buffer))
        self.data_list = []
        self.data_bytes = np.frombuffer(bytes(buffer), dtype=np.uint8)
        del buffer
        self.data_address = np.frombuffer(ends, dtype=np.int64).copy()
        self._modality_length = self._lengths_from(lengths)
        self._fully_initialized = True

    def _lengths_from(self, lengths) -> np.ndarray:
        out = np.fromiter((int(v) if not isinstance(v, dict) else
                           self.modality_length_of(v) for v in lengths),
                          dtype=np.int32)
        if (out == 0).any():
            raise ValueError(f'{self.dataset_name}: modality_length of 0 for '
                             f'records {np.flatnonzero(out == 0)[:5]}')
        return out

    def index_nbytes(self) -> int:
        """Bytes held by the index (serialized records, offsets, lengths)."""
        total = int(self._modality_length.nbytes) \
            if self._modality_length is not None else 0
        if self.serialize_data and self._fully_initialized:
            total += int(self.data_bytes.nbytes + self.data_address.nbytes)
        return total

    @property
    def modality_length(self) -> np.ndarray:
        """``(len(self),) int32``: token-length estimate per sample."""
        if not self._fully_initialized:
            self.full_init()
        return self._modality_length

    # -- samples ------------------------------------------------------------
    def prepare_data(self, idx: int, draw: Sequence[int] = ()) -> dict:
        """Record ``idx`` through the pipeline with the random generator of
        ``(idx, draw)``: ``[seed, idx]`` followed by ``d + 1`` for each draw
        number after the leading zeros of ``draw``. So the first copy, and a
        mix nested in another with one copy, give ``[seed, idx]``; distinct
        draws of one nesting depth stay distinct (``+ 1``: numpy's
        ``SeedSequence`` ignores trailing zeros)."""
        info = self.get_data_info(idx)
        defect = info.pop('record_error', None)
        if defect:
            raise RecordError(*defect)
        info['sample_idx'] = idx
        draw = [int(d) for d in draw]
        while draw and draw[0] == 0:
            draw.pop(0)
        info['rng'] = np.random.default_rng([self.seed, idx]
                                            + [d + 1 for d in draw])
        info.setdefault('dataset_name', self.dataset_name)
        return self.pipeline(info)

    def describe_record(self, idx: int) -> str:
        """Short identification of a record for error messages."""
        info = self.get_data_info(idx)
        where = [f'{k}={info[k]!r}' for k in ('img_path', 'video_path',
                                              'record_id') if k in info]
        if self.ann_file and 'record_id' in info:
            where.append(f'in {self.ann_file}')
        return f'{self.dataset_name}[{idx}] ' + ' '.join(where)

    def __getitem__(self, idx: int) -> dict:
        return self.get_sample(idx)

    def get_sample(self, idx: int, draw: Sequence[int] = ()) -> dict:
        """Sample ``idx`` (``draw``: the repeat copy numbers given by the
        enclosing mixes, see ``seed``); a bad record is replaced by another
        record, drawn with the same ``draw``, and counted."""
        if not self._fully_initialized:
            print_log('Please call `full_init()` method manually to '
                      'accelerate the speed.', logger='current', level=30)
            self.full_init()
        skipped: dict[str, int] = {}
        rng = None
        for _ in range(self.max_refetch + 1):
            self._tried += 1
            try:
                data = self.prepare_data(idx, draw)
            except RecordError as exc:
                self._bad += 1
                skipped[exc.reason] = skipped.get(exc.reason, 0) + 1
                print_log(f'skipping bad record {self.describe_record(idx)}: '
                          f'{exc.reason}: {exc}', logger='current', level=30)
                self._check_bad_fraction()
                if rng is None:
                    rng = np.random.default_rng(idx)
                idx = int(rng.integers(len(self)))
                continue
            for reason, n in skipped.items():
                bump(data, f'skipped/{reason}', n)
            return data
        raise RuntimeError(
            f'{self.dataset_name}: {self.max_refetch + 1} bad records in a '
            f'row (last: {self.describe_record(idx)}); reasons {skipped}. '
            f'Run tools/check_data.py on the config.')

    def _check_bad_fraction(self) -> None:
        if self._tried >= self.min_bad_checks and \
                self._bad > self.max_bad_fraction * self._tried:
            raise RuntimeError(
                f'{self.dataset_name}: {self._bad} of {self._tried} records '
                f'tried are bad (more than max_bad_fraction='
                f'{self.max_bad_fraction}). Fix the data or raise the limit; '
                f'tools/check_data.py lists the bad records.')
