"""Your own data: images, masks (PNG or RLE) and text, in one JSON list.

``annotations.json`` (relative to ``data_root``) is a list of records, one
per image (field table in ``docs/datasets.md``, "Fine-tune on your own
data")::

    [{"image": "images/0001.jpg",
      "objects": [{"mask": "masks/0001_0.png",
                   "text": ["the red car", "car on the left"],
                   "description": "A red car parked by the kerb."},
                  {"mask": {"size": [480, 640], "counts": "..."}}],
      "conversation": [{"from": "human", "value": "What is there?"},
                       {"from": "gpt", "value": "A car [SEG] and a dog [SEG]."}]},
     ...]

``mask`` is a PNG path relative to ``data_root`` (non-zero pixels are the
object, the image's size), a COCO RLE dict (compressed ``counts`` str or
uncompressed list) or a COCO polygon list. One file can serve three tasks,
one ``OwnDataset`` each (``task``):

* ``'referring'``: every (object, expression in ``text``) pair is a
  referring target; a sample draws ``num_classes_per_sample`` of an image's
  pairs and asks Sa2VA's referring questions, answered with ``[SEG]``
  (as RefCOCO). Objects without ``text`` are not targets.
* ``'region_caption'``: the objects with a ``description`` are visual
  prompts; each gets a describe question (as Osprey's detailed
  descriptions) answered by its description.
* ``'conversation'``: the ``conversation`` (LLaVA-style turns) with one
  ``[SEG]`` per object of ``objects`` in the answers, in order; the k-th
  ``[SEG]`` is supervised by the k-th object's mask (as GCG). Records
  without a conversation are not in this task.

The dataset logs how many records / objects each task uses. Structural
errors (a missing field, a wrong type, a ``[SEG]`` count that differs from
the object count) raise when the index is built, naming the file and the
record; a missing or unreadable mask file is a bad record
(``missing_mask`` / ``bad_mask``) when it is drawn.
"""
from __future__ import annotations

import os.path as osp

import numpy as np
from mmengine.logging import print_log

from ..constants import IMAGE_PLACEHOLDER
from ..registry import DATASETS, TRANSFORMS
from ..transforms.base import BaseTransform, RecordError, require
from ..transforms.text import conversation_from_turns
from .base import (Sa2VABaseDataset, estimate_text_tokens, estimate_tiles,
                   first_text_defect, iter_json_array)

TASKS = ('referring', 'region_caption', 'conversation')
SEG_TOKEN = '[SEG]'


def _mask_entry(mask, data_root: str, where: str):
    """A record's ``mask`` value, with a PNG path made relative to the
    working directory (``data_root`` joined)."""
    if isinstance(mask, str):
        if not mask:
            raise ValueError(f'{where}: "mask" is an empty path')
        return osp.join(data_root, mask) if data_root else mask
    if isinstance(mask, dict):
        if 'size' not in mask or 'counts' not in mask:
            raise ValueError(f'{where}: an RLE "mask" needs "size" and '
                             f'"counts"')
        return mask
    if isinstance(mask, list) and mask:
        return mask
    raise ValueError(f'{where}: "mask" must be a PNG path, an RLE dict or a '
                     f'polygon list, got {type(mask).__name__}')


def _strings(value, where: str) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str)
                                               for v in values):
        raise ValueError(f'{where} must be a string or a list of strings')
    return values


@DATASETS.register_module()
class OwnDataset(Sa2VABaseDataset):
    """Images with masks and text in the own-data format (module docstring).

    Args:
        ann_file: the JSON list (relative to ``data_root``).
        task: ``'referring'``, ``'region_caption'`` or ``'conversation'``.
        max_num_tiles, num_classes_per_sample: for the length estimate
            (match the pipeline's ``DynamicTiles`` and
            ``SampleReferringObjects``).
        **kwargs: see :class:`Sa2VABaseDataset`.

    Records of the index (what the pipeline receives):

    * all: ``img_path`` (str), ``record_id`` (str), ``ori_shape`` ((H, W),
      only when the record states ``height`` and ``width``);
    * ``referring``: ``objects`` (list of ``{'segmentation', 'text'}``, one
      per expression);
    * ``region_caption``: ``segmentations`` (list, one per described
      object), ``descriptions`` (list of str);
    * ``conversation``: ``segmentations`` (in ``[SEG]`` order),
      ``conversation`` (``[{'input', 'output'}]``, the first input starting
      with ``<image>\\n``).

    Raises:
        ValueError: an unknown task; a structurally wrong record (names the
            file and record); no record usable by the task.
    """

    def __init__(self, *args, task: str = 'referring',
                 max_num_tiles: int = 12, num_classes_per_sample: int = 5,
                 **kwargs):
        if task not in TASKS:
            raise ValueError(f'OwnDataset: task must be one of {TASKS}, got '
                             f'{task!r}')
        self.task = task
        self.max_num_tiles = max_num_tiles
        self.num_classes_per_sample = num_classes_per_sample
        super().__init__(*args, **kwargs)

    def load_data_list(self):
        used = unused = 0
        for i, rec in enumerate(iter_json_array(self.ann_file)):
            where = f'{self.ann_file}: record {i}'
            try:
                info = self._record(rec, where)
            except (KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f'{where}: malformed: {type(exc).__name__}: '
                                 f'{exc}') from None
            if info is None:
                unused += 1
                continue
            used += 1
            info['record_id'] = f'{osp.basename(self.ann_file)}[{i}]'
            yield info
        print_log(f'{self.dataset_name}: task {self.task!r} uses {used} '
                  f'records of {self.ann_file}' + (
                      f'; {unused} have nothing for this task' if unused
                      else ''), logger='current')
        if not used:
            raise ValueError(f'{self.ann_file}: no record has what task '
                             f'{self.task!r} needs (see docs/datasets.md, '
                             f'"Fine-tune on your own data")')

    def _record(self, rec, where: str) -> dict | None:
        if not isinstance(rec, dict):
            raise ValueError(f'{where}: expected an object, got '
                             f'{type(rec).__name__}')
        image = rec['image']
        if not isinstance(image, str) or not image:
            raise ValueError(f'{where}: "image" must be a non-empty path')
        objects = rec.get('objects', [])
        if not isinstance(objects, list) or not all(
                isinstance(o, dict) for o in objects):
            raise ValueError(f'{where}: "objects" must be a list of objects')
        size = None
        if 'height' in rec or 'width' in rec:
            size = (int(rec['height']), int(rec['width']))
        root = self.data_root or ''
        info = dict(img_path=osp.join(root, image) if root else image)
        if size is not None:   # LoadImage checks the image against it
            info['ori_shape'] = size
        masks = [_mask_entry(o['mask'], root, f'{where} object {k}')
                 for k, o in enumerate(objects)]
        texts = []
        if self.task == 'referring':
            pairs = []
            for k, (o, m) in enumerate(zip(objects, masks)):
                for j, t in enumerate(_strings(o.get('text', []),
                                               f'{where} object {k} "text"')):
                    pairs.append(dict(segmentation=m, text=t))
                    texts.append((f'{where} object {k} text {j}', t))
            if not pairs:
                return None
            info['objects'] = pairs
        elif self.task == 'region_caption':
            described = [(k, o, m) for k, (o, m) in
                         enumerate(zip(objects, masks)) if 'description' in o]
            if not described:
                return None
            info['segmentations'] = [m for _, _, m in described]
            info['descriptions'] = [
                _strings(o['description'], f'{where} object {k} '
                         f'"description"')[0] for k, o, _ in described]
            texts += [(f'{where} object {k} description', d) for (k, _, _), d
                      in zip(described, info['descriptions'])]
        else:
            turns = rec.get('conversation')
            if turns is None:
                return None
            conv = self._conversation(turns, where)
            n_seg = sum(t['output'].count(SEG_TOKEN) for t in conv)
            n_in = sum(t['input'].count(SEG_TOKEN) for t in conv)
            if n_in:
                raise ValueError(f'{where}: {SEG_TOKEN} in a question; only '
                                 f'answers ground objects')
            if not masks:
                raise ValueError(f'{where}: a conversation record needs at '
                                 f'least one object and its {SEG_TOKEN} '
                                 f'(plain chat: use the LLaVA format)')
            if n_seg != len(masks):
                raise ValueError(f'{where}: the answers hold {n_seg} '
                                 f'{SEG_TOKEN} but the record has '
                                 f'{len(masks)} objects (one per {SEG_TOKEN}'
                                 f', in order)')
            info['segmentations'] = masks
            info['conversation'] = conv
            texts += [(f'{where} turn {k} {r}', t[r]) for k, t in
                      enumerate(conv) for r in ('input', 'output')]
        bad = first_text_defect(texts, allow=(IMAGE_PLACEHOLDER, SEG_TOKEN))
        if bad:
            info['record_error'] = bad
        info['text_tokens'] = sum(estimate_text_tokens(t) for _, t in texts)
        return info

    @staticmethod
    def _conversation(turns, where: str) -> list[dict]:
        if not isinstance(turns, list) or not turns:
            raise ValueError(f'{where}: "conversation" must be a non-empty '
                             f'list of turns')
        try:
            conv = conversation_from_turns(turns)
        except ValueError as exc:
            raise ValueError(f'{where}: "conversation": {exc}') from None
        if not conv:
            raise ValueError(f'{where}: "conversation" has no human/gpt pair')
        first = conv[0]['input']
        if first.startswith(IMAGE_PLACEHOLDER):
            first = first[len(IMAGE_PLACEHOLDER):].lstrip('\n')
        if any(IMAGE_PLACEHOLDER in t['input'] + t['output'] for t in
               [dict(input=first, output=conv[0]['output'])] + conv[1:]):
            raise ValueError(f'{where}: {IMAGE_PLACEHOLDER} may only open '
                             f'the first question')
        conv[0]['input'] = IMAGE_PLACEHOLDER + '\n' + first
        return conv

    def modality_length_of(self, info: dict) -> int:
        h, w = info.get('ori_shape') or (480, 640)
        text = info['text_tokens']
        if self.task == 'referring':
            mean = text / max(len(info['objects']), 1)
            text = int(self.num_classes_per_sample * (18 + mean))
        else:
            text += 20 * len(info.get('segmentations', ()))
        return text + 256 * estimate_tiles(w, h, max_num=self.max_num_tiles)


def _load_png_mask(path: str) -> dict:
    """A PNG mask file as a compressed RLE dict (non-zero = object)."""
    from PIL import Image
    from pycocotools import mask as mask_utils
    if not osp.isfile(path):
        raise RecordError('missing_mask', f'mask file not found: {path}')
    try:
        with Image.open(path) as im:
            m = np.asarray(im)
    except (OSError, ValueError) as exc:
        raise RecordError('bad_mask', f'{path}: {exc}') from None
    if m.ndim == 3:
        m = m.any(axis=2)
    rle = mask_utils.encode(np.asfortranarray((m != 0).astype(np.uint8)))
    return dict(size=[int(s) for s in rle['size']], counts=rle['counts'])


@TRANSFORMS.register_module()
class LoadMaskFiles(BaseTransform):
    """Read the PNG masks a record names by path, as RLE dicts (the
    encodings ``DecodeMasks`` takes); RLE and polygon masks pass unchanged.
    A PNG of another size than the image is refused by ``DecodeMasks``
    (``bad_mask``, the RLE size differs).

    Required Keys: ``objects`` (list of ``{'segmentation', ...}``) or
    ``segmentations`` (list).

    Modified Keys: the same, paths replaced by ``{'size', 'counts'}``.

    Raises:
        RecordError: ``'missing_mask'`` (file not found), ``'bad_mask'``
        (not an image).
    """

    def transform(self, results: dict) -> dict:
        if 'objects' not in results:
            require(results, 'segmentations', where='LoadMaskFiles')
        cache: dict = {}

        def load(seg):
            if not isinstance(seg, str):
                return seg
            if seg not in cache:
                cache[seg] = _load_png_mask(seg)
            return cache[seg]
        if 'objects' in results:
            results['objects'] = [dict(o, segmentation=load(o['segmentation']))
                                  for o in results['objects']]
        if 'segmentations' in results:
            results['segmentations'] = [load(s) for s in
                                        results['segmentations']]
        return results
