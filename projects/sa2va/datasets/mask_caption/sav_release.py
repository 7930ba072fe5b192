"""SA-V frame pairs made from the official SA-V release:
:class:`SAVPairReleaseDataset` + :class:`SampleSAVFramePair`."""
from __future__ import annotations

import json
import os
import os.path as osp
from typing import Sequence

import numpy as np
from mmengine.logging import print_log

from ...registry import DATASETS, TRANSFORMS
from ...transforms.base import BaseTransform, RecordError, require
from ...transforms.functional import decode_mask
from ..base import Sa2VABaseDataset
from .common import LENGTH_ESTIMATE, log_skips, rle_area

# ---------------------------------------------------------------------------
# SA-V pairs from the official release
# ---------------------------------------------------------------------------
@DATASETS.register_module()
class SAVPairReleaseDataset(Sa2VABaseDataset):
    """Frame pairs from the SA-V release, one sample per masklet.

    On disk (``docs/datasets.md``): ``<data_root>/**/sav_<id>_manual.json``
    (and ``_auto.json``) next to ``sav_<id>.mp4``; optionally extracted
    frames ``<data_root>/<frames_folder>/sav_<id>/%05d.jpg`` (every video
    frame). Masklet frame ``t`` is video frame ``4 t``.

    The index reads each annotation file once (``masklet_num``, the frame
    size and which annotated frames show each object); masklets visible in
    fewer than 2 annotated frames cannot make a pair and are left out (a
    logged count, ``index_stats``). The pair itself is drawn per sample by
    :class:`SampleSAVFramePair`.

    Args:
        annotation_types: ``('manual',)`` (every train video has one),
            ``('auto',)`` or both.
        frames_folder: folder (relative to ``data_root``) of extracted
            frames; None: frames are decoded from the mp4.
        min_area: pixels an object needs in a frame to count as visible.
        max_samples: keep the first N masklets (files in sorted order).

    Record: ``record_id`` (``<video>/<type>#<k>``), ``anno_path``,
    ``video_path``, ``frames_dir`` (or absent), ``objects`` (``[{'anno_ids':
    [str(k)]}]``, for ``LoadSAVAnnotation``), ``masklet_index``,
    ``ori_shape`` ((H, W) from the file), ``has_paired_frame=True``,
    ``dataset_type``.
    """

    def __init__(self, *args, annotation_types=('manual', ),
                 frames_folder: str | None = None, min_area: int = 1,
                 max_samples: int | None = None, dataset_type: str = 'sav',
                 **kwargs):
        self.annotation_types = tuple([annotation_types] if isinstance(
            annotation_types, str) else annotation_types)
        bad = set(self.annotation_types) - {'manual', 'auto'}
        if bad or not self.annotation_types:
            raise ValueError(f"annotation_types must be from ('manual', "
                             f"'auto'), got {annotation_types!r}")
        self.frames_folder = frames_folder
        self.min_area = int(min_area)
        self.max_samples = max_samples
        self.dataset_type = dataset_type
        self.index_stats: dict[str, int] = {}
        super().__init__(*args, **kwargs)

    def _annotation_files(self) -> list[str]:
        suffixes = tuple(f'_{t}.json' for t in self.annotation_types)
        out = []
        for dirpath, dirnames, filenames in os.walk(self.data_root):
            dirnames.sort()
            for name in filenames:
                if name.startswith('sav_') and name.endswith(suffixes):
                    out.append(osp.join(dirpath, name))
        return sorted(out)

    def load_data_list(self):
        files = self._annotation_files()
        if not files:
            raise ValueError(f'{self.dataset_name}: no sav_*_'
                             f'{{{",".join(self.annotation_types)}}}.json '
                             f'under {self.data_root}')
        skipped = {'masklet_visible_in_fewer_than_2_frames': 0,
                   'unreadable_annotation': 0}
        n = 0
        for path in files:
            stem = osp.basename(path)[:-len('.json')]
            video_id, kind = stem.rsplit('_', 1)
            try:
                with open(path, encoding='utf-8') as f:
                    data = json.load(f)
                masklet = data['masklet']
                h, w = int(data['video_height']), int(data['video_width'])
                num = int(data['masklet_num'])
                visible = [sum(rle_area(fr[k]) >= self.min_area
                               for fr in masklet) for k in range(num)]
            except (OSError, ValueError, KeyError, TypeError,
                    IndexError) as exc:
                skipped['unreadable_annotation'] += 1
                print_log(f'{self.dataset_name}: cannot index {path}: '
                          f'{type(exc).__name__}: {exc}', logger='current',
                          level=30)
                continue
            for k in range(num):
                if visible[k] < 2:
                    skipped['masklet_visible_in_fewer_than_2_frames'] += 1
                    continue
                info = dict(
                    record_id=f'{video_id}/{kind}#{k}', anno_path=path,
                    video_path=osp.join(osp.dirname(path), f'{video_id}.mp4'),
                    objects=[dict(anno_ids=[str(k)])], masklet_index=k,
                    ori_shape=(h, w), has_paired_frame=True,
                    dataset_type=self.dataset_type)
                if self.frames_folder is not None:
                    info['frames_dir'] = osp.join(
                        self.data_root, self.frames_folder, video_id)
                yield info
                n += 1
                if self.max_samples is not None and n >= self.max_samples:
                    break
            if self.max_samples is not None and n >= self.max_samples:
                break
        self.index_stats = {k: v for k, v in skipped.items() if v}
        log_skips(self.dataset_name, self.data_root, skipped)

    def modality_length_of(self, info: dict) -> int:
        return LENGTH_ESTIMATE

PAIR_RULES = ('random', 'first_last')

@TRANSFORMS.register_module()
class SampleSAVFramePair(BaseTransform):
    """Choose the two annotated frames of a masklet (frame 1 -> frame 2).

    Candidates are the annotated frames where the object covers at least
    ``min_area`` pixels (RLE area, no decoding).

    * ``'random'`` (default): uniformly one of the pairs ``(t1, t2)`` of
      candidates with ``t1 < t2`` and ``min_gap <= t2 - t1 <= max_gap``
      (gaps in annotated frames; 1 = 4 video frames), drawn with
      ``results['rng']`` (so a sample is reproducible from the dataset seed
      and its index);
    * ``'first_last'``: the first and the last candidate (largest gap).

    Frame 2 is always the later frame and is the target.

    Args:
        rule, min_gap, max_gap, min_area: see above.
        frame_name: file name of video frame ``i`` inside ``frames_dir``.
        frame_stride: video frames per annotated frame (4).

    Required Keys: ``mask_tracks`` (from ``LoadSAVAnnotation``),
    ``objects``, ``ori_shape``, ``rng``.

    Added Keys: ``pair_frame_indices`` ([t1, t2], annotated-frame indices),
    ``frame_indices`` (same, for ``LoadVideoFrames(frame_stride=4)``),
    ``frame_paths`` (when the record has ``frames_dir``, for
    ``LoadFrames``), ``pair_masks`` (2 x ``(H, W) uint8`` {0, 1}, decoded
    RLEs).

    Raises:
        RecordError: ``'no_frame_pair'`` (fewer than 2 candidates within the
        gaps), ``'bad_mask'``.
    """

    def __init__(self, rule: str = 'random', min_gap: int = 1,
                 max_gap: int | None = None, min_area: int = 1,
                 frame_name: str = '{:05d}.jpg', frame_stride: int = 4):
        if rule not in PAIR_RULES:
            raise ValueError(f'rule must be one of {PAIR_RULES}, got {rule!r}')
        if min_gap < 1 or (max_gap is not None and max_gap < min_gap):
            raise ValueError(f'need 1 <= min_gap <= max_gap, got {min_gap}, '
                             f'{max_gap}')
        self.rule = rule
        self.min_gap, self.max_gap = int(min_gap), max_gap
        self.min_area = int(min_area)
        self.frame_name = frame_name
        self.frame_stride = int(frame_stride)

    def choose(self, visible: Sequence[int], rng) -> tuple[int, int] | None:
        """The pair ``(t1, t2)`` from the sorted candidate frames, or None."""
        v = np.asarray(visible, dtype=np.int64)
        if self.rule == 'first_last':
            ok = len(v) >= 2 and self.min_gap <= v[-1] - v[0] and (
                self.max_gap is None or v[-1] - v[0] <= self.max_gap)
            return (int(v[0]), int(v[-1])) if ok else None
        i, j = np.triu_indices(len(v), k=1)
        gap = v[j] - v[i]
        keep = gap >= self.min_gap
        if self.max_gap is not None:
            keep &= gap <= self.max_gap
        i, j = i[keep], j[keep]
        if len(i) == 0:
            return None
        p = int(rng.integers(len(i)))
        return int(v[i[p]]), int(v[j[p]])

    def transform(self, results: dict) -> dict:
        tracks, objects, (h, w), rng = require(
            results, 'mask_tracks', 'objects', 'ori_shape', 'rng',
            where='SampleSAVFramePair')
        key = objects[0]['anno_ids'][0]
        track = tracks[key]
        try:
            visible = [t for t, rle in enumerate(track)
                       if rle_area(rle) >= self.min_area]
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordError('bad_mask', f'masklet {key}: {exc}') from None
        pair = self.choose(visible, rng)
        if pair is None:
            raise RecordError('no_frame_pair', f'masklet {key} is visible in '
                              f'annotated frames {visible}: no pair with '
                              f'gap in [{self.min_gap}, {self.max_gap}]')
        masks = []
        for t in pair:
            try:
                masks.append(decode_mask(track[t], h, w))
            except (ValueError, TypeError) as exc:
                raise RecordError('bad_mask', f'masklet {key} frame {t}: '
                                  f'{exc}') from None
        results['pair_frame_indices'] = list(pair)
        results['frame_indices'] = list(pair)
        if results.get('frames_dir'):
            results['frame_paths'] = [
                osp.join(results['frames_dir'],
                         self.frame_name.format(t * self.frame_stride))
                for t in pair]
        results['pair_masks'] = masks
        return results
