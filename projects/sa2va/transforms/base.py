"""Base class and shared helpers of the registered pipeline transforms."""
from __future__ import annotations

from typing import Any


class RecordError(ValueError):
    """A data record that cannot be turned into a sample.

    Raised by transforms (missing image, corrupt file, empty mask, ...).
    Datasets catch it, log the file and record, count ``reason`` and move
    on; it never silently becomes another sample.

    Args:
        reason: short counter key, e.g. ``'missing_image'``.
        message: what is wrong, naming the file / field.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class BaseTransform:
    """A pipeline step: ``results -> results`` (mmcv's convention).

    Subclasses implement :meth:`transform`; the docstring of each lists
    *Required Keys*, *Modified Keys* and *Added Keys* with shapes, dtypes
    and ranges.
    """

    def __call__(self, results: dict) -> dict:
        return self.transform(results)

    def transform(self, results: dict) -> dict:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ', '.join(f'{k}={v!r}' for k, v in vars(self).items()
                         if not k.startswith('_'))
        return f'{type(self).__name__}({args})'


def bump(results: dict, key: str, n: int = 1) -> None:
    """Add ``n`` to the per-sample statistic ``key``.

    The statistics travel with the sample (``results['data_stats']``), are
    summed by the collate function and logged by ``DataStatsHook``, so counts
    made in dataloader workers reach the training log.
    """
    if n:
        stats = results.setdefault('data_stats', {})
        stats[key] = stats.get(key, 0) + n


def require(results: dict, *keys: str, where: str) -> Any:
    """Fetch required keys, raising a KeyError naming the transform."""
    missing = [k for k in keys if k not in results]
    if missing:
        raise KeyError(f'{where} needs the key(s) {missing}; present: '
                       f'{sorted(results)}. Check the pipeline order.')
    return [results[k] for k in keys]
