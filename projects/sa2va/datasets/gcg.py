"""Family 4, grounded conversation generation (GCG): RefCOCOg-GCG, GranDf,
Flickr30k-GCG and OpenPSG-GCG, one class with a format adapter each.

On disk (``docs/datasets.md``)::

    glamm_data/annotations/RefCOCOg_GCG_train.json     [{"<id>": {img_file_name, caption, refs}}]
    glamm_data/annotations/GranDf_HA_GCG_train.json    [{file_name, caption, groundings}]
    glamm_data/annotations/OpenPsgGCG_train.json       same as GranDf
    glamm_data/annotations/flickr_mergedGT_GCG_train.json  COCO dict (images
        with caption; annotations with tokens_positive + sam_mask)
    glamm_data/images/{coco2014/train2014, grandf/train, flickr30k/Flickr30K, coco2017}/

Every adapter yields the caption, the phrase spans sorted by start, and the
mask parts of each phrase; the answer (Sa2VA v1's tagging, built once when
the index is made) is the caption with ``<p> phrase </p> [SEG]`` around each
span; :class:`GCGQuestion` draws the question per sample.
"""
from __future__ import annotations

import os.path as osp

from mmengine.logging import print_log

from ..constants import IMAGE_PLACEHOLDER
from ..registry import DATASETS, TRANSFORMS
from ..transforms.base import BaseTransform, RecordError, require
from .base import (Sa2VABaseDataset, estimate_text_tokens, estimate_tiles,
                   first_text_defect, load_json)
from .refseg import polygon_parts
from .vqa import image_size_from_header

# Sa2VA v1's GCG questions, as data (magic-research/Sa2VA,
# projects/llava_sam2/datasets/gcg_process.py: GCG_QUESTIONS, each there
# prefixed by '<image>' and moved to '<image>\n' by the loader).
GCG_QUESTIONS = (
    'Could you please give me a brief description of the image? Please '
    'respond with interleaved segmentation masks for the corresponding parts '
    'of the answer.',
    'Can you provide a brief description of the this image? Please output '
    'with interleaved segmentation masks for the corresponding phrases.',
    'Please briefly describe the contents of the image. Please respond with '
    'interleaved segmentation masks for the corresponding parts of the '
    'answer.',
    'Could you give a brief explanation of what can be found within this '
    'picture? Please output with interleaved segmentation masks for the '
    'corresponding phrases.',
    'Could you give me an brief explanation of this picture? Please respond '
    'with interleaved segmentation masks for the corresponding phrases.',
    'Could you provide me with a briefly analysis of this photo? Please '
    'output with interleaved segmentation masks for the corresponding parts '
    'of the answer.',
)

GCG_FORMATS = ('refcocog', 'grandf', 'openpsg', 'flickr')


def tag_caption(caption: str, spans) -> str:
    """Sa2VA's GCG answer: each ``[start, end)`` span wrapped as
    ``<p> phrase </p> [SEG]``, inserted from the last span backwards.

    Args:
        caption: the caption.
        spans: ``[(start, end), ...]`` character spans, sorted by start.

    Returns:
        the tagged caption (one ``[SEG]`` per span, in span order).
    """
    for start, end in sorted(spans, key=lambda s: s[0], reverse=True):
        caption = (f'{caption[:start]}<p> {caption[start:end]} </p> [SEG]'
                   f'{caption[end:]}')
    return caption


def _sort_by_start(spans, parts):
    order = sorted(range(len(spans)), key=lambda i: spans[i][0])
    return [spans[i] for i in order], [parts[i] for i in order]


def _span_defect(caption: str, spans) -> str | None:
    for s, e in spans:
        if not 0 <= s < e <= len(caption):
            return (f'span [{s}, {e}) is empty or outside the caption '
                    f'(length {len(caption)})')
    return None


def adapt_refcocog(rec: dict):
    """RefCOCOg-GCG record -> ``(file_name, caption, spans, parts, size)``.

    Sa2VA v1's rules: the caption loses surrounding ``"`` and blanks and is
    lower-cased; a ref is used if its sentence occurs in it
    (case-insensitively) and its span is where the lower-cased sentence
    first occurs (v1 searches the sentence as written, which fails for
    capitals; v2 lower-cases: we follow v2, identical for lower-case data);
    refs are sorted by start; a span reaching the start of a later one is
    cut to end one character before it. (v1 runs this loop over the refs in
    file order, which corrupts the caption when refs are not in caption
    order; we run it in caption order, identical for ordered refs.) Parts:
    one per polygon (summed).
    """
    caption = rec['caption'].strip('"').strip().lower()
    spans, parts = [], []
    for ref in rec['refs']:
        phrase = ref['sentence'].lower()
        if phrase in caption:
            start = caption.find(phrase)
            spans.append([start, start + len(phrase)])
            parts.append(polygon_parts(ref['segmentation']))
    spans, parts = _sort_by_start(spans, parts)
    for i in range(len(spans)):
        for j in range(i + 1, len(spans)):
            if spans[i][1] >= spans[j][0]:
                spans[i][1] = spans[j][0] - 1
                break
    return rec['img_file_name'], caption, spans, parts, None


def adapt_grandf(rec: dict):
    """GranDf / OpenPSG record -> ``(file_name, caption, spans, parts,
    size)``: the caption loses surrounding ``"`` and blanks (spans are not
    moved, as Sa2VA); phrases in file order (None groundings skipped), sorted
    by ``token_positives`` start; parts: the phrase's ``rle_masks``
    (summed)."""
    caption = rec['caption'].strip('"').strip()
    spans, parts = [], []
    for _, grounding in rec['groundings'].items():
        if grounding is None:
            continue
        s, e = grounding['token_positives']
        spans.append([int(s), int(e)])
        parts.append(list(grounding['rle_masks']))
    spans, parts = _sort_by_start(spans, parts)
    size = (int(rec['height']), int(rec['width'])) \
        if 'height' in rec and 'width' in rec else None
    return rec['file_name'], caption, spans, parts, size


def _flickr_ann_kept(ann: dict, height: int, width: int) -> bool:
    """Sa2VA/GLaMM's Flickr annotation filter: not ignored, box overlapping
    the image, positive area, box sides >= 1."""
    if ann.get('ignore', False):
        return False
    x1, y1, w, h = ann['bbox']
    inter_w = max(0, min(x1 + w, width) - max(x1, 0))
    inter_h = max(0, min(y1 + h, height) - max(y1, 0))
    return not (inter_w * inter_h == 0 or ann['area'] <= 0 or w < 1 or h < 1)


def flickr_records(coco: dict, min_words: int = 3, min_size: int = 32):
    """Flickr30k-GCG COCO dict -> ``(records, n_dropped)``; each record is
    ``(image_entry, kept annotations)``. Images with a caption of fewer than
    ``min_words`` words (split on ' ') or a shorter side below ``min_size``
    are dropped, as Sa2VA does."""
    by_image: dict = {}
    for ann in coco['annotations']:
        by_image.setdefault(ann['image_id'], []).append(ann)
    out, dropped = [], 0
    for im in coco['images']:
        h, w = int(im['height']), int(im['width'])
        if len(im['caption'].split(' ')) < min_words or min(h, w) < min_size:
            dropped += 1
            continue
        anns = [a for a in by_image.get(im['id'], [])
                if _flickr_ann_kept(a, h, w)]
        out.append((im, anns))
    return out, dropped


def adapt_flickr(item):
    """Flickr30k-GCG ``(image_entry, annotations)`` -> ``(file_name,
    caption, spans, parts, size)``: the caption as is; each annotation's
    first ``tokens_positive`` span; parts: its ``sam_mask``."""
    im, anns = item
    spans = [list(a['tokens_positive'][0]) for a in anns]
    parts = [[a['sam_mask']] for a in anns]
    spans, parts = _sort_by_start(spans, parts)
    return (im['file_name'], im['caption'], spans, parts,
            (int(im['height']), int(im['width'])))


@DATASETS.register_module()
class GCGDataset(Sa2VABaseDataset):
    """Grounded conversation generation over one of the four GLaMM files.

    Args:
        ann_file: the annotation file (relative to ``data_root``).
        data_prefix: ``dict(img_path=<image folder>)``.
        format: ``'refcocog'``, ``'grandf'``, ``'openpsg'`` or ``'flickr'``.
        max_num_tiles: tiling limit of the length estimate.
        read_image_headers: RefCOCOg-GCG has no image size in its file: read
            each image's header for the tile estimate (``False`` assumes
            ``max_num_tiles + 1`` tiles).
        **kwargs: see :class:`Sa2VABaseDataset`.

    Each record: ``img_path``, ``record_id``, ``answer`` (the tagged caption,
    one ``[SEG]`` per phrase), ``segmentations`` (list over phrases, in
    ``[SEG]`` order, of mask parts, summed by ``DecodeMasks(combine='sum')``),
    ``num_tiles_estimate`` and ``defect`` (None, or why the record cannot
    be used: no phrase, a bad span; :class:`GCGQuestion` raises it).
    """

    def __init__(self, *args, format: str = 'grandf',
                 max_num_tiles: int = 12, read_image_headers: bool = True,
                 **kwargs):
        if format not in GCG_FORMATS:
            raise ValueError(f'format must be one of {GCG_FORMATS}, got '
                             f'{format!r}')
        self.format = format
        self.max_num_tiles = max_num_tiles
        self.read_image_headers = read_image_headers
        kwargs.setdefault('data_prefix', dict(img_path=''))
        super().__init__(*args, **kwargs)

    def _raw_items(self):
        data = load_json(self.ann_file)
        if self.format == 'flickr':
            if not isinstance(data, dict) or not isinstance(
                    data.get('images'), list) or not isinstance(
                    data.get('annotations'), list):
                raise ValueError(f'{self.ann_file}: expected a COCO dict '
                                 f'with "images" and "annotations" lists')
            try:
                items, dropped = flickr_records(data)
            except (KeyError, TypeError, ValueError, AttributeError,
                    IndexError, OverflowError) as exc:
                raise ValueError(f'{self.ann_file}: malformed image or '
                                 f'annotation entry: {type(exc).__name__}: '
                                 f'{exc}') from None
            if dropped:
                print_log(f'{self.dataset_name}: dropped {dropped} images '
                          f'with captions under 3 words or sides under 32 '
                          f'px (Sa2VA\'s filter)', logger='current')
            return [(str(im['id']), (im, anns)) for im, anns in items]
        if not isinstance(data, list):
            raise ValueError(f'{self.ann_file}: expected a JSON list, got '
                             f'{type(data).__name__}')
        if self.format == 'refcocog':
            out = []
            for i, entry in enumerate(data):
                if not isinstance(entry, dict) or len(entry) != 1:
                    raise ValueError(f'{self.ann_file}: record {i} must be a '
                                     f'single-key dict {{id: record}}')
                (key, rec), = entry.items()
                out.append((str(key), rec))
            return out
        return [(str(rec.get('image_id', i)) if isinstance(rec, dict)
                 else str(i), rec) for i, rec in enumerate(data)]

    def load_data_list(self) -> list[dict]:
        adapter = dict(refcocog=adapt_refcocog, grandf=adapt_grandf,
                       openpsg=adapt_grandf, flickr=adapt_flickr)[self.format]
        out = []
        for i, (key, item) in enumerate(self._raw_items()):
            try:
                file_name, caption, spans, parts, size = adapter(item)
                if not isinstance(file_name, str):
                    raise TypeError(f'file name {file_name!r} is not a '
                                    f'string')
                spans = [(int(a), int(b)) for a, b in spans]
            except (KeyError, TypeError, ValueError, AttributeError,
                    IndexError, OverflowError) as exc:
                raise ValueError(f'{self.ann_file}: record {i} ({key}) is '
                                 f'malformed: {type(exc).__name__}: '
                                 f'{exc}') from None
            defect = None if spans else 'no grounded phrase'
            defect = defect or _span_defect(caption, spans)
            path = osp.join(self.data_prefix['img_path'], file_name)
            if size is None and self.read_image_headers:
                wh = image_size_from_header(path)
                size = (wh[1], wh[0]) if wh else None
            tiles = (estimate_tiles(size[1], size[0],
                                    max_num=self.max_num_tiles)
                     if size else self.max_num_tiles + 1)
            info = dict(
                img_path=path, record_id=f'record {i} ({key})',
                answer=tag_caption(caption, spans) if defect is None else '',
                segmentations=parts, num_tiles_estimate=tiles,
                defect=defect)
            if size is not None:
                info['ori_shape'] = size
            bad = first_text_defect(
                [(f'{self.ann_file}: record {i} caption', caption)])
            if bad:
                info['record_error'] = bad
            out.append(info)
        return out

    def modality_length_of(self, info: dict) -> int:
        # question ~25 tokens; each tag adds '<p>', ' </p>', ' [SEG]'
        text = 25 + estimate_text_tokens(info['answer'] or ' ')
        return text + 256 * info['num_tiles_estimate']


@TRANSFORMS.register_module()
class GCGQuestion(BaseTransform):
    """The GCG conversation: a random question, the tagged caption.

    ``[{input: '<image>\\n' + question, output: answer}]`` with the question
    drawn from ``questions`` by ``results['rng']``.

    Required Keys: ``answer`` (str), ``defect`` (None or str), ``rng``.

    Added Keys: ``conversation`` (one pair).

    Raises:
        RecordError: ``'no_phrases'`` or ``'bad_span'`` for a record whose
        ``defect`` is set.
    """

    def __init__(self, questions=GCG_QUESTIONS):
        self.questions = tuple(questions)

    def transform(self, results: dict) -> dict:
        answer, defect, rng = require(results, 'answer', 'defect', 'rng',
                                      where='GCGQuestion')
        if defect:
            reason = 'no_phrases' if defect == 'no grounded phrase' \
                else 'bad_span'
            raise RecordError(reason, defect)
        question = self.questions[int(rng.integers(len(self.questions)))]
        results['conversation'] = [dict(
            input=IMAGE_PLACEHOLDER + '\n' + question.strip(),
            output=answer)]
        return results
