"""Mixing datasets with (fractional) repeats, keeping ``modality_length``."""
from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
from torch.utils.data import Dataset

from ..registry import DATASETS
from .samplers import get_modality_lengths


def apply_pipeline_defaults(cfg: dict, defaults: dict | None) -> dict:
    """A copy of a dataset config with ``defaults`` filled into its pipeline
    steps (and those of nested mixes); arguments a step sets win."""
    cfg = copy.deepcopy(dict(cfg))
    if not defaults:
        return cfg
    steps = []
    for step in cfg.get('pipeline') or []:
        if isinstance(step, dict):
            step = dict(step)
            name = step.get('type')
            name = name if isinstance(name, str) else getattr(
                name, '__name__', None)
            name = name.split('.')[-1] if isinstance(name, str) else name
            for key, value in (defaults.get(name) or {}).items():
                step.setdefault(key, value)
        steps.append(step)
    if 'pipeline' in cfg:
        cfg['pipeline'] = steps
    if 'datasets' in cfg:
        merged = dict(defaults)
        for name, args in (cfg.get('pipeline_defaults') or {}).items():
            merged[name] = {**merged.get(name, {}), **args}
        cfg['pipeline_defaults'] = merged
    return cfg


@DATASETS.register_module()
class MixedDataset(Dataset):
    """Concatenation of datasets, each repeated ``repeats[i]`` times.

    A repeat of 2.5 gives every sample twice plus a seeded random half of
    the samples once more (Sa2VA v2's fractional repeats); Sa2VA v1's habit
    of listing a dataset four times is ``repeats=4``. The index is two int
    arrays (dataset, local index), so it stays compact for millions of
    samples.

    Args:
        datasets: dataset configs (built from the plugin's ``DATASETS``) or
            dataset objects.
        repeats: one float >= 0 per dataset (default 1 each).
        seed: for the fractional parts.
        pipeline_defaults: ``{transform type: {arg: value}}`` filled into
            every child config's pipeline steps of that type where the step
            does not set the argument itself, e.g.
            ``dict(EncodeConversation=dict(tokenizer=path, template=...,
            max_length=8192))``: the experiment config states the tokenizer
            and template once, the family base configs stay model-agnostic,
            and a dataset that needs its own template keeps it.

    Attributes:
        modality_length: ``(len(self),) int64``, from the datasets.
    """

    def __init__(self, datasets: Sequence, repeats: Sequence[float] | None
                 = None, seed: int = 0, pipeline_defaults: dict | None = None):
        self.datasets = [
            DATASETS.build(apply_pipeline_defaults(d, pipeline_defaults))
            if isinstance(d, dict) else d for d in datasets
        ]
        if not self.datasets:
            raise ValueError('MixedDataset needs at least one dataset')
        repeats = [1.0] * len(self.datasets) if repeats is None else \
            [float(r) for r in repeats]
        if len(repeats) != len(self.datasets):
            raise ValueError(f'{len(repeats)} repeats for '
                             f'{len(self.datasets)} datasets')
        if any(r < 0 for r in repeats):
            raise ValueError(f'repeats must be >= 0, got {repeats}')
        self.repeats = repeats
        rng = np.random.default_rng(seed)
        which, local, lengths = [], [], []
        for d, (ds, rep) in enumerate(zip(self.datasets, repeats)):
            n = len(ds)
            whole = int(rep)
            frac = int(round((rep - whole) * n))
            idx = np.concatenate([np.tile(np.arange(n), whole),
                                  np.sort(rng.choice(n, frac, replace=False))])
            which.append(np.full(len(idx), d, dtype=np.int32))
            local.append(idx.astype(np.int64))
            lengths.append(get_modality_lengths(ds)[idx])
        self._which = np.concatenate(which)
        self._local = np.concatenate(local)
        self.modality_length = np.concatenate(lengths)

    def __len__(self) -> int:
        return len(self._which)

    def __getitem__(self, idx: int):
        return self.datasets[self._which[idx]][int(self._local[idx])]

    def summary(self) -> list[dict]:
        """Per dataset: name, records, repeat, samples in the mix."""
        counts = np.bincount(self._which, minlength=len(self.datasets))
        return [dict(name=getattr(d, 'dataset_name', type(d).__name__),
                     records=len(d), repeat=r, samples=int(c))
                for d, r, c in zip(self.datasets, self.repeats, counts)]
