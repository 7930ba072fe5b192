"""Checking every dataset of a config in one pass (``tools/check_data.py``).

* Each dataset of the (nested) mix is built on its own, with the mix's
  pipeline settings and root prefix (:func:`~.mixing.child_configs`): one
  that cannot be built (missing annotation file, structural error) is
  reported and the others are still checked.
* Records are checked in chunks, in this process or in ``workers`` forked
  processes; every failing record is counted by reason (``RecordError``
  reasons, or ``exception/<type>`` for anything else) and the first ones are
  named, so one run lists every problem.
* ``files_only``: only the files each record names (``*_path``, ``*_dir``,
  ``frame_paths``, mask files) are checked for existence, without decoding:
  minutes instead of hours for LLaVA-665K.
"""
from __future__ import annotations

import multiprocessing as mp
import os.path as osp
import sys
import time
from dataclasses import dataclass

from ..transforms.base import RecordError
from .inspect import DatasetReport, check_dataset
from .mixing import child_configs


@dataclass
class Leaf:
    """One dataset of a config: built, or the reason it could not be."""
    name: str
    dataset: object = None
    error: str | None = None


def _is_mix(cfg) -> bool:
    kind = cfg.get('type') if isinstance(cfg, dict) else None
    name = kind if isinstance(kind, str) else getattr(kind, '__name__', '')
    return name.split('.')[-1] == 'MixedDataset'


def build_leaves(dataset_cfg) -> list[Leaf]:
    """Every family dataset of ``dataset_cfg`` (a mix, nested mixes or one
    dataset config), each built separately; build errors are kept."""
    from ..registry import DATASETS
    if _is_mix(dataset_cfg):
        cfg = dict(dataset_cfg)
        children = child_configs(
            cfg.get('datasets', []), cfg.get('pipeline_defaults'),
            cfg.get('pipeline_overrides'), cfg.get('data_root_prefix'),
            cfg.get('dataset_pipeline_overrides'), cfg.get('pipeline_swaps'))
        return [leaf for child, _ in children
                for leaf in build_leaves(child)]
    if not isinstance(dataset_cfg, dict):
        return [Leaf(getattr(dataset_cfg, 'dataset_name',
                             type(dataset_cfg).__name__), dataset_cfg)]
    name = str(dataset_cfg.get('dataset_name') or dataset_cfg.get('type'))
    try:
        return [Leaf(name, DATASETS.build(dict(dataset_cfg)))]
    except Exception as exc:  # noqa: BLE001 - reported, the rest goes on
        root = dataset_cfg.get('data_root')
        return [Leaf(name, error=f'{type(exc).__name__}: {exc}' + (
            f' (data_root {root!r})' if root else ''))]


def record_files(info: dict) -> list[tuple[str, str, bool]]:
    """``(key, path, is_dir)`` for the files a record names: string values
    of keys ending in ``_path`` / ``_dir``, ``frame_paths`` and mask paths
    (``objects[*].segmentation``, ``segmentations[*]`` given as str)."""
    out = []
    for key, value in info.items():
        if key.endswith('_path') and isinstance(value, str):
            out.append((key, value, False))
        elif key.endswith('_dir') and isinstance(value, str):
            out.append((key, value, True))
        elif key == 'frame_paths' and isinstance(value, (list, tuple)):
            out += [(key, v, False) for v in value if isinstance(v, str)]
    for obj in info.get('objects') or ():
        if isinstance(obj, dict) and isinstance(obj.get('segmentation'), str):
            out.append(('mask', obj['segmentation'], False))
    for seg in info.get('segmentations') or ():
        if isinstance(seg, str):
            out.append(('mask', seg, False))
    return out


#: files-only reasons, named as the full check names them where it can
MISSING = dict(img_path='missing_image', video_path='missing_video',
               video_dir='missing_video', frame_paths='missing_frame',
               tar_path='missing_tar', anno_path='missing_annotation',
               mask='missing_mask')


class _Chunk:
    """Records ``start .. stop - 1`` of a dataset, in the interface of
    ``check_dataset``; any exception of a record becomes a ``RecordError``
    (``exception/<type>``), and ``files_only`` checks file existence
    only."""

    def __init__(self, dataset, start: int, stop: int, files_only: bool):
        self.dataset, self.start, self.stop = dataset, start, stop
        self.files_only = files_only
        self.dataset_name = getattr(dataset, 'dataset_name',
                                    type(dataset).__name__)

    def __len__(self):
        return self.stop - self.start

    def describe_record(self, idx: int) -> str:
        return self.dataset.describe_record(self.start + idx)

    def prepare_data(self, idx: int):
        i = self.start + idx
        try:
            if not self.files_only:
                return self.dataset.prepare_data(i)
            info = self.dataset.get_data_info(i)
            if info.get('record_error'):
                raise RecordError(*info['record_error'])
            for key, path, is_dir in record_files(info):
                if not (osp.isdir(path) if is_dir else osp.isfile(path)):
                    raise RecordError(MISSING.get(key, f'missing_{key}'),
                                      f'{key} not found: {path}')
            return {}
        except RecordError:
            raise
        except Exception as exc:  # noqa: BLE001 - counted, the check goes on
            raise RecordError(f'exception/{type(exc).__name__}',
                              str(exc)) from None


_LEAVES: list = []   # the datasets, inherited by forked workers


def _check_chunk(job):
    k, start, stop, files_only, examples = job
    return k, check_dataset(_Chunk(_LEAVES[k], start, stop, files_only),
                            max_examples=examples)


def _merge(into: DatasetReport, part: DatasetReport, examples: int) -> None:
    into.checked += part.checked
    into.ok += part.ok
    into.problems.update(part.problems)
    into.stats.update(part.stats)
    into.examples += part.examples[:max(0, examples - len(into.examples))]


def check_leaves(leaves: list[Leaf], limit: int | None = None,
                 examples: int = 5, workers: int = 0,
                 files_only: bool = False, progress=sys.stderr,
                 interval: float = 5.0) -> list[DatasetReport]:
    """Check the records of the built leaves.

    Args:
        limit: at most this many records per dataset.
        examples: offending records named per dataset.
        workers: forked processes (0: this one).
        files_only: existence of the named files only.
        progress: a stream for progress lines (None: quiet), written at
            most every ``interval`` seconds and when a dataset is done.

    Returns:
        one report per built leaf (in order; records in index order).
    """
    global _LEAVES
    built = [leaf for leaf in leaves if leaf.dataset is not None]
    _LEAVES = [leaf.dataset for leaf in built]
    reports, jobs = [], []
    for k, leaf in enumerate(built):
        n = len(leaf.dataset) if limit is None else min(limit,
                                                        len(leaf.dataset))
        reports.append(DatasetReport(name=leaf.name,
                                     records=len(leaf.dataset)))
        size = max(1, min(2000, n // max(4 * workers, 1) or 1))
        jobs += [(k, s, min(s + size, n), files_only, examples)
                 for s in range(0, n, size)]
    remaining = {k: sum(1 for j in jobs if j[0] == k)
                 for k in range(len(built))}
    total = sum(j[2] - j[1] for j in jobs)
    done, last = 0, time.monotonic()
    if workers > 0 and jobs:
        pool = mp.get_context('fork').Pool(workers)
        results = pool.imap(_check_chunk, jobs)
    else:
        pool, results = None, map(_check_chunk, jobs)
    try:
        for k, part in results:
            _merge(reports[k], part, examples)
            done += part.checked
            remaining[k] -= 1
            now = time.monotonic()
            if progress is not None and (remaining[k] == 0
                                         or now - last >= interval):
                last = now
                state = 'done' if remaining[k] == 0 else 'checking'
                print(f'[{done}/{total} records] {reports[k].name}: {state} '
                      f'{reports[k].checked}/{reports[k].records}, '
                      f'{reports[k].errors} bad', file=progress, flush=True)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return reports
