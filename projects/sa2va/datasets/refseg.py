"""Family 2, referring segmentation on images: RefCOCO, RefCOCO+, RefCOCOg.

On disk (``docs/datasets.md``)::

    <data_root>/instances.json      COCO dict: images, annotations (polygons)
    <data_root>/refs(unc).p         pickle: list of ref dicts (refs(umd).p
                                    for RefCOCOg)
    <data_root>/coco2014/train2014/COCO_train2014_%012d.jpg

One dataset item is one image with all its ``train`` refs; each ref keeps
one sentence (``text_mode``), drawn once when the index is built. Per sample
:class:`SampleReferringObjects` draws ``num_classes_per_sample`` (ref,
sentence) pairs with replacement and writes Sa2VA v1's conversation; the
rest is the shared transforms (``DecodeMasks(combine='sum')`` adds the
polygons of one object, as Sa2VA does).
"""
from __future__ import annotations

import os.path as osp

from ..constants import IMAGE_PLACEHOLDER
from ..registry import DATASETS, TRANSFORMS
from ..transforms.base import BaseTransform, RecordError, require
from .base import (Sa2VABaseDataset, estimate_text_tokens, estimate_tiles,
                   first_text_defect, load_json, stated_size_defect)
from .safe_pickle import load_data_pickle

# Sa2VA v1's referring-segmentation questions and answers (the same lists
# serve RefCOCO and the video datasets; they live in refvos.py).
from .refvos import ANSWER_LIST, SEG_QUESTIONS  # noqa: F401

#: Sa2VA v1's RefCOCO loader encodes with its own routine: the InternVL
#: user turn without the newline between ``<|end|>`` and ``<|assistant|>``,
#: no separator between turns and no EOS (phi3's ``<|end|>`` suffix ends
#: each answer). As a chat-template dict for ``EncodeConversation``.
REFSEG_V1_PHI3_TEMPLATE = dict(
    INSTRUCTION='<|user|>\n{input}<|end|><|assistant|>\n',
    SUFFIX='<|end|>', SUFFIX_AS_EOS=True, SEP='')

TEXT_MODES = ('random', 'select_first', 'original')


def polygon_parts(segmentation):
    """One object's segmentation as a list of parts for ``DecodeMasks``.

    A polygon list becomes one part per polygon (so ``combine='sum'`` adds
    them, as Sa2VA v1); an RLE dict is one part.

    Args:
        segmentation: COCO polygon list ``[[x1, y1, ...], ...]`` or RLE dict.

    Returns:
        list of encodings, each a polygon list with one polygon or an RLE.

    Raises:
        TypeError: ``segmentation`` is neither a list nor a dict.
    """
    if isinstance(segmentation, dict):
        return [segmentation]
    if not isinstance(segmentation, (list, tuple)):
        raise TypeError(f'segmentation must be a polygon list or an RLE '
                        f'dict, got {type(segmentation).__name__}')
    return [[poly] for poly in segmentation]


@DATASETS.register_module()
class RefCOCODataset(Sa2VABaseDataset):
    """RefCOCO / RefCOCO+ / RefCOCOg, one item per image.

    Args:
        ann_file: ``instances.json`` (relative to ``data_root``).
        split_file: the refs pickle, ``refs(unc).p`` or ``refs(umd).p``.
        data_prefix: ``dict(img_path='coco2014/train2014/')``.
        split: refs split to keep (Sa2VA trains on ``'train'``).
        text_mode: ``'random'`` (one sentence per ref, drawn once with the
            dataset seed: Sa2VA's default), ``'select_first'``, or
            ``'original'`` (every sentence is a separate pair).
        max_num_tiles: tiling limit of the length estimate (match the
            pipeline's ``DynamicTiles``).
        num_classes_per_sample: pairs per sample, for the length estimate
            (match :class:`SampleReferringObjects`).
        **kwargs: see :class:`Sa2VABaseDataset`.

    Each record: ``img_path`` (str), ``record_id`` (str),
    ``ori_shape`` ((H, W) from ``instances.json``), ``objects`` (list over
    refs of ``{'segmentation': polygon list | RLE, 'text': str}``, ``text``
    lower-cased ``raw`` sentence).
    """

    def __init__(self, *args, split_file: str = 'refs(unc).p',
                 split: str = 'train', text_mode: str = 'random',
                 max_num_tiles: int = 12, num_classes_per_sample: int = 5,
                 **kwargs):
        if text_mode not in TEXT_MODES:
            raise ValueError(f'text_mode must be one of {TEXT_MODES}, got '
                             f'{text_mode!r}')
        self.split_file = split_file
        self.split = split
        self.text_mode = text_mode
        self.max_num_tiles = max_num_tiles
        self.num_classes_per_sample = num_classes_per_sample
        kwargs.setdefault('data_prefix', dict(img_path='coco2014/train2014/'))
        super().__init__(*args, **kwargs)

    def _join_prefix(self):
        if self.split_file and not osp.isabs(self.split_file) and \
                self.data_root:
            self.split_file = osp.join(self.data_root, self.split_file)
        super()._join_prefix()

    def _coco_tables(self, instances) -> tuple[dict, dict]:
        """``{ann id: annotation}``, ``{image id: image}`` of
        ``instances.json`` (ValueError naming the file and entry)."""
        if not isinstance(instances, dict) or not isinstance(
                instances.get('annotations'), list) or not isinstance(
                instances.get('images'), list):
            raise ValueError(f'{self.ann_file}: expected a COCO dict with '
                             f'"images" and "annotations" lists')
        tables = []
        for key in ('annotations', 'images'):
            table = {}
            for j, entry in enumerate(instances[key]):
                try:
                    table[entry['id']] = entry
                except (KeyError, TypeError) as exc:
                    raise ValueError(f'{self.ann_file}: {key}[{j}] has no '
                                     f'"id": {type(exc).__name__}: '
                                     f'{exc}') from None
            tables.append(table)
        return tables[0], tables[1]

    def _image_entry(self, image_id, ref_k) -> tuple[str, tuple]:
        im = self._images[image_id]
        try:
            size = (int(im['height']), int(im['width']))
            name = im['file_name']
            if not isinstance(name, str):
                raise ValueError(f'file_name {name!r}, size {size}')
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f'{self.ann_file}: image {image_id!r} (of ref '
                             f'{ref_k}) needs a file_name, a height and a '
                             f'width: {type(exc).__name__}: '
                             f'{exc}') from None
        return name, size

    def load_data_list(self) -> list[dict]:
        import numpy as np
        refs = load_data_pickle(self.split_file)
        instances = load_json(self.ann_file)
        if not isinstance(refs, list):
            raise ValueError(f'{self.split_file}: expected a list of refs, '
                             f'got {type(refs).__name__}')
        anns, images = self._coco_tables(instances)
        self._images = images
        rng = np.random.default_rng([self.seed, 0x5EF])
        by_image: dict = {}
        for k, ref in enumerate(refs):
            try:
                if ref['split'] != self.split:
                    continue
                ref_id, ann_id = ref['ref_id'], ref['ann_id']
                image_id = ref['image_id']
                texts = [s['raw'].lower() for s in ref['sentences']]
                hash(ann_id), hash(image_id)
            except (KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f'{self.split_file}: ref {k} is malformed: '
                                 f'{type(exc).__name__}: {exc}') from None
            if ann_id not in anns:
                raise ValueError(f'{self.split_file}: ref {k} (ref_id '
                                 f'{ref_id}) names ann_id {ann_id}, which '
                                 f'{self.ann_file} does not have')
            if image_id not in images:
                raise ValueError(f'{self.split_file}: ref {k} (ref_id '
                                 f'{ref_id}) names image_id {image_id}, '
                                 f'which {self.ann_file} does not have')
            if not texts:
                raise ValueError(f'{self.split_file}: ref {k} (ref_id '
                                 f'{ref_id}) has no sentences')
            if self.text_mode == 'random':
                texts = [texts[int(rng.integers(len(texts)))]]
            elif self.text_mode == 'select_first':
                texts = texts[:1]
            seg = anns[ann_id].get('segmentation') \
                if isinstance(anns[ann_id], dict) else None
            if seg is None:
                raise ValueError(f'{self.ann_file}: annotation {ann_id!r} '
                                 f'(of ref {k}) has no "segmentation"')
            self._image_entry(image_id, k)
            # Sa2VA keys the refs by ann_id: a later ref of the same object
            # replaces the earlier one.
            objs = [dict(segmentation=seg, text=t, ref=k) for t in texts]
            slot = by_image.setdefault(image_id, {})
            slot[ann_id] = objs
        out = []
        for image_id, per_ann in by_image.items():
            name, size = self._image_entry(image_id, None)
            objects = [o for objs in per_ann.values() for o in objs]
            info = dict(
                img_path=osp.join(self.data_prefix['img_path'], name),
                record_id=f'image_id={image_id}', ori_shape=size,
                objects=[dict(segmentation=o['segmentation'],
                              text=o['text']) for o in objects])
            bad = first_text_defect(
                (f'{self.split_file}: ref {o["ref"]} sentence', o['text'])
                for o in objects) or stated_size_defect(
                    *size, f'{self.ann_file}: image {image_id!r}')
            if bad:
                info['record_error'] = bad
            out.append(info)
        del self._images
        if not out:
            raise ValueError(f'{self.split_file}: no ref in split '
                             f'{self.split!r}')
        return out

    def modality_length_of(self, info: dict) -> int:
        h, w = info['ori_shape']
        texts = [o['text'] for o in info['objects']]
        mean_text = sum(estimate_text_tokens(t) for t in texts) / len(texts)
        # question template (~12 tokens) + answer (~6) + phrase, per pair
        text = int(self.num_classes_per_sample * (18 + mean_text))
        return text + 256 * estimate_tiles(w, h, max_num=self.max_num_tiles)


def referring_turn(text: str, rng, questions=SEG_QUESTIONS,
                   answers=ANSWER_LIST, first: bool = False,
                   what: str = 'the object') -> tuple[str, dict]:
    """One Sa2VA v1 referring turn about ``text``.

    The phrase is ``text`` without one trailing ``.``; the turn is
    ``{input: questions[q].format(class_name=phrase), output: answers[a]}``
    (``q`` then ``a`` drawn from ``rng``), both stripped, the input prefixed
    by ``<image>\\n`` when ``first``.

    Returns:
        ``(phrase, turn)``.

    Raises:
        RecordError: ``'empty_text'`` when the phrase is blank (``what``
        names the object in the message).
    """
    phrase = text[:-1] if text.endswith('.') else text
    if not phrase.strip():
        raise RecordError('empty_text', f'{what} has an empty sentence')
    question = questions[int(rng.integers(len(questions)))].format(
        class_name=phrase)
    answer = answers[int(rng.integers(len(answers)))]
    if first:
        question = IMAGE_PLACEHOLDER + '\n' + question
    return phrase, dict(input=question.strip(), output=answer.strip())


@TRANSFORMS.register_module()
class SampleReferringObjects(BaseTransform):
    """Draw the sample's objects and write Sa2VA v1's referring questions.

    ``num`` (ref, sentence) pairs are drawn with replacement (so an image
    with one ref repeats it); each phrase loses one trailing ``.``; pair
    ``i`` becomes the turn ``{input: SEG_QUESTIONS[q].format(class_name=
    phrase), output: ANSWER_LIST[a]}``, the first input prefixed by
    ``<image>\\n``; inputs and outputs are stripped (v1 strips every turn).
    Draw order from ``results['rng']``: the ``num`` object indices, then per
    turn the question, then the answer.

    Args:
        num: pairs per sample (``num_classes_per_sample``, 5 in Sa2VA).
        questions, answers: template lists (default Sa2VA v1's).

    Required Keys: ``objects`` (list of ``{'segmentation', 'text'}``),
    ``rng`` (np.random.Generator).

    Added Keys: ``segmentations`` (list of ``num`` part lists, for
    ``DecodeMasks(combine='sum')``), ``conversation`` (``num`` pairs),
    ``phrases`` (list of ``num`` str).

    Raises:
        RecordError: ``'no_objects'``, ``'empty_text'``, ``'bad_mask'`` (a
        segmentation that is neither a polygon list nor an RLE dict).
    """

    def __init__(self, num: int = 5, questions=SEG_QUESTIONS,
                 answers=ANSWER_LIST):
        if num < 1:
            raise ValueError(f'num must be >= 1, got {num}')
        self.num = int(num)
        self.questions = tuple(questions)
        self.answers = tuple(answers)

    def transform(self, results: dict) -> dict:
        objects, rng = require(results, 'objects', 'rng',
                               where='SampleReferringObjects')
        if not objects:
            raise RecordError('no_objects', 'record has no referred object')
        picks = rng.choice(len(objects), self.num, replace=True)
        segs, phrases, conv = [], [], []
        for i, k in enumerate(picks):
            obj = objects[int(k)]
            phrase, turn = referring_turn(obj['text'], rng, self.questions,
                                          self.answers, first=i == 0,
                                          what=f'object {int(k)}')
            conv.append(turn)
            try:
                segs.append(polygon_parts(obj['segmentation']))
            except TypeError as exc:
                raise RecordError('bad_mask', f'object {int(k)}: '
                                  f'{exc}') from None
            phrases.append(phrase)
        results['segmentations'] = segs
        results['conversation'] = conv
        results['phrases'] = phrases
        return results
