"""SA-1B raw (``mask-caption-cycle.md`` 8.2): :class:`SA1BDataset` +
:class:`LoadSA1BAnnotation`."""
from __future__ import annotations

import json
import os
import os.path as osp

import numpy as np
from mmengine.logging import print_log

from ...registry import DATASETS, TRANSFORMS
from ...transforms.base import BaseTransform, RecordError, require
from .common import CompactIndexDataset, log_skips, strings_array, rle_area

# ---------------------------------------------------------------------------
# SA-1B raw
# ---------------------------------------------------------------------------
@DATASETS.register_module()
class SA1BDataset(CompactIndexDataset):
    """SA-1B raw: ``<data_root>/js/<id>.json`` + ``<data_root>/img/<id>.jpg``,
    one sample per (image, annotation).

    The index reads each JSON once (its own ``image.width`` /
    ``image.height`` and the annotations' ``area``); no image is opened.
    Annotations with ``area < min_area`` are left out (``area`` from the
    JSON, or the RLE's area when the field is missing); the default 1
    drops empty masks, as SAM 2's loader does. JSONs that cannot be read are
    skipped; both counts are logged and kept in ``index_stats``.

    Args:
        data_prefix: ``dict(json='js', img='img')``.
        max_images: keep the first N JSON files in sorted order (the owner's
            ``sa1b_max_samples``: N images, ~100 masks each).
        min_area: see above.

    Index (shared by workers): ``stems`` (n_img,) bytes, ``image_hw``
    (n_img, 2) int32, ``sample_image`` (n,) int32, ``sample_ann`` (n,)
    int32 (position in the JSON's ``annotations``): 8 bytes per sample plus
    the length array.

    Record: ``img_path``, ``json_path``, ``ann_index``, ``ori_shape`` ((H,
    W) from the JSON), ``record_id`` (``<stem>#<ann_index>``).
    """

    INDEX_ARRAYS = ('stems', 'image_hw', 'sample_image', 'sample_ann')
    DATASET_TYPE = 'sa1b'

    def __init__(self, *args, max_images: int | None = None,
                 min_area: int = 1, **kwargs):
        self.max_images = max_images
        self.min_area = int(min_area)
        kwargs.setdefault('data_prefix', dict(json='js', img='img'))
        super().__init__(*args, **kwargs)

    def build_index(self) -> int:
        js_dir = self.data_prefix['json']
        if not osp.isdir(js_dir):
            raise FileNotFoundError(f'{self.dataset_name}: JSON folder not '
                                    f'found: {js_dir}')
        names = sorted(n for n in os.listdir(js_dir) if n.endswith('.json'))
        if self.max_images is not None:
            names = names[:int(self.max_images)]
        stems, hw = [], []
        sample_image, sample_ann = [], []
        skipped = {'unreadable_json': 0, 'annotation_below_min_area': 0}
        for name in names:
            path = osp.join(js_dir, name)
            try:
                with open(path, encoding='utf-8') as f:
                    data = json.load(f)
                h = int(data['image']['height'])
                w = int(data['image']['width'])
                areas = [int(a['area']) if 'area' in a
                         else rle_area(a['segmentation'])
                         for a in data['annotations']]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                skipped['unreadable_json'] += 1
                print_log(f'{self.dataset_name}: cannot index {path}: '
                          f'{type(exc).__name__}: {exc}', logger='current',
                          level=30)
                continue
            keep = [k for k, a in enumerate(areas) if a >= self.min_area]
            skipped['annotation_below_min_area'] += len(areas) - len(keep)
            if not keep:
                continue
            sample_image.extend([len(stems)] * len(keep))
            sample_ann.extend(keep)
            stems.append(name[:-len('.json')])
            hw.append((h, w))
        self.stems = strings_array(stems)
        self.image_hw = np.asarray(hw, dtype=np.int32).reshape(-1, 2)
        self.sample_image = np.asarray(sample_image, dtype=np.int32)
        self.sample_ann = np.asarray(sample_ann, dtype=np.int32)
        self.index_stats = {k: v for k, v in skipped.items() if v}
        log_skips(self.dataset_name, js_dir, skipped)
        if not len(self.sample_image):
            raise ValueError(f'{self.dataset_name}: no annotation with area '
                             f'>= {self.min_area} in {js_dir}')
        return len(self.sample_image)

    def record(self, idx: int) -> dict:
        i = int(self.sample_image[idx])
        k = int(self.sample_ann[idx])
        stem = self.stems[i].decode('utf-8')
        h, w = (int(v) for v in self.image_hw[i])
        return dict(img_path=osp.join(self.data_prefix['img'], stem + '.jpg'),
                    json_path=osp.join(self.data_prefix['json'],
                                       stem + '.json'),
                    ann_index=k, ori_shape=(h, w),
                    record_id=f'{stem}#{k}')

@TRANSFORMS.register_module()
class LoadSA1BAnnotation(BaseTransform):
    """Read one annotation's segmentation from an SA-1B JSON.

    Required Keys: ``json_path`` (str), ``ann_index`` (int), ``ori_shape``
    ((H, W) from the index).

    Added Keys: ``segmentations`` (``[RLE dict]``, for ``DecodeMasks``).

    Raises:
        RecordError: ``'missing_annotation'``, ``'bad_annotation'`` (not
        JSON, no such annotation, the file's size differs from the index).
    """

    def transform(self, results: dict) -> dict:
        path, k, (h, w) = require(results, 'json_path', 'ann_index',
                                  'ori_shape', where='LoadSA1BAnnotation')
        if not osp.isfile(path):
            raise RecordError('missing_annotation', f'not found: {path}')
        try:
            with open(path, encoding='utf-8') as f:
                data = json.load(f)
            size = (int(data['image']['height']), int(data['image']['width']))
            seg = data['annotations'][k]['segmentation']
        except (OSError, ValueError, KeyError, TypeError,
                IndexError) as exc:
            raise RecordError('bad_annotation', f'{path} annotation {k}: '
                              f'{type(exc).__name__}: {exc}') from None
        if size != (h, w):
            raise RecordError('bad_annotation', f'{path}: image size {size} '
                              f'differs from the index {(h, w)}')
        results['segmentations'] = [seg]
        return results
