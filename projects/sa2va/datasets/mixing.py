"""Mixing datasets with (fractional) repeats, keeping ``modality_length``."""
from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
from torch.utils.data import Dataset

from ..registry import DATASETS
from .samplers import get_modality_lengths


def _step_name(step: dict):
    name = step.get('type')
    name = name if isinstance(name, str) else getattr(name, '__name__', None)
    return name.split('.')[-1] if isinstance(name, str) else name


def _registered(name, what: str) -> None:
    from ..registry import TRANSFORMS
    if isinstance(name, str) and TRANSFORMS.get(name) is None:
        raise KeyError(f'pipeline_swaps: {what} {name!r} is not a registered '
                       f'transform (a typo, or its module is not imported)')


def _default_arg(name: str, arg: str):
    """The default of ``arg`` in transform ``name``'s signature (None when
    it has none)."""
    import inspect

    from ..registry import TRANSFORMS
    cls = TRANSFORMS.get(name)
    param = inspect.signature(cls).parameters.get(arg) if cls else None
    return None if param is None or param.default is param.empty \
        else param.default


def _replacements(step: dict, swap, where: str) -> list:
    """The steps that replace ``step`` by one ``pipeline_swaps`` value."""
    if swap is None:
        return []
    if isinstance(swap, (list, tuple)):
        return [s for item in swap for s in _replacements(step, item, where)]
    if not isinstance(swap, dict):
        raise TypeError(f'pipeline_swaps[{where!r}] must be None, a step '
                        f'dict or a list of them, got {type(swap).__name__}')
    if '_by_' in swap:
        arg, cases = swap['_by_'], swap.get('_cases_') or {}
        value = step.get(arg, _default_arg(_step_name(step), arg))
        if value not in cases:
            raise KeyError(f'pipeline_swaps[{where!r}]: the step has '
                           f'{arg}={value!r}, which _cases_ does not list '
                           f'({sorted(map(str, cases))})')
        return _replacements(step, cases[value], where)
    new = {k: v for k, v in swap.items() if k != '_inherit_'}
    _registered(_step_name(new), f'the replacement of {where}')
    for arg in swap.get('_inherit_') or ():
        if arg in step:
            new[arg] = copy.deepcopy(step[arg])
    return [new]


def swap_pipeline_steps(cfg: dict, swaps: dict | None) -> dict:
    """A copy of a dataset config with pipeline steps replaced by type.

    Args:
        cfg: a dataset config, or a ``MixedDataset`` config: then every
            child (nested mixes too) is swapped.
        swaps: ``{step type: replacement}``, a replacement being ``None``
            (the step is dropped), a step dict, or a list of step dicts. A
            step dict may carry ``_inherit_=('arg', ...)``: those arguments
            of the replaced step, where it sets them, are copied over. A
            replacement ``dict(_by_='arg', _cases_={value: replacement})``
            picks by the replaced step's ``arg`` (its class default when
            the step does not set it), e.g. ``ImagesToTensor`` by ``key``:
            ``'tiles'`` (an image) or ``'frames'`` (a video).

    Raises:
        KeyError: a swapped or replacement type that is not a registered
            transform; a ``_by_`` value not in ``_cases_``.
    """
    cfg = dict(cfg)
    if not swaps:
        return cfg
    for name in swaps:
        _registered(name, 'the step type')
    if cfg.get('pipeline') is not None:
        steps = []
        for step in cfg['pipeline']:
            name = _step_name(step) if isinstance(step, dict) else None
            if name in swaps:
                steps += _replacements(step, swaps[name], name)
            else:
                steps.append(step)
        cfg['pipeline'] = steps
    if 'datasets' in cfg:
        cfg['datasets'] = [swap_pipeline_steps(d, swaps)
                           if isinstance(d, dict) else d
                           for d in cfg['datasets']]
    return cfg


def _merge(outer: dict | None, inner: dict | None, inner_wins: bool) -> dict:
    merged = {k: dict(v) for k, v in (outer or {}).items()}
    for name, args in (inner or {}).items():
        base = merged.get(name, {})
        merged[name] = {**base, **args} if inner_wins else {**args, **base}
    return merged


def apply_pipeline_defaults(cfg: dict, defaults: dict | None = None,
                            overrides: dict | None = None,
                            data_root: tuple | None = None,
                            swaps: dict | None = None) -> dict:
    """A copy of a dataset config with pipeline settings applied.

    Args:
        cfg: a dataset config (or a nested ``MixedDataset`` config).
        swaps: ``{transform type: replacement}`` applied first, to the
            config and every nested child (:func:`swap_pipeline_steps`);
            ``defaults`` and ``overrides`` then apply to the swapped steps.
        defaults: ``{transform type: {arg: value}}`` filled into the
            pipeline steps of that type that do not set ``arg``.
        overrides: same shape, set whatever the step says.
        data_root: ``(old_prefix, new_prefix)`` or ``(old_prefix,
            new_prefix, dataset_names)``: a ``data_root`` starting with
            ``old_prefix`` gets ``new_prefix`` instead; with names, only the
            datasets of those ``dataset_name`` s move (``move_data_root``).

    Nested mixes receive the settings (their own defaults win over outer
    defaults; outer overrides win over theirs).
    """
    cfg = swap_pipeline_steps(copy.deepcopy(dict(cfg)), swaps)
    if 'pipeline' in cfg:
        steps = []
        for step in cfg.get('pipeline') or []:
            if isinstance(step, dict):
                step = dict(step)
                name = _step_name(step)
                for key, value in ((defaults or {}).get(name) or {}).items():
                    step.setdefault(key, value)
                step.update((overrides or {}).get(name) or {})
            steps.append(step)
        cfg['pipeline'] = steps
    moved = move_data_root(cfg, data_root)
    if moved is not None:
        cfg['data_root'] = moved
    if 'datasets' in cfg:
        if defaults:
            cfg['pipeline_defaults'] = _merge(
                defaults, cfg.get('pipeline_defaults'), inner_wins=True)
        if overrides:
            cfg['pipeline_overrides'] = _merge(
                overrides, cfg.get('pipeline_overrides'), inner_wins=False)
        if data_root and not cfg.get('data_root_prefix'):
            cfg['data_root_prefix'] = tuple(data_root)
    return cfg


def _check_prefix(data_root) -> None:
    if data_root is None:
        return
    if (not isinstance(data_root, (tuple, list)) or len(data_root) not in
            (2, 3) or not all(isinstance(p, str) for p in data_root[:2])):
        raise ValueError(
            f'data_root_prefix must be (old, new) or (old, new, '
            f'[dataset names]), got {data_root!r}')


def move_data_root(cfg: dict, data_root) -> str | None:
    """The new ``data_root`` of a dataset config under ``data_root_prefix``
    (None: it stays). ``(old, new)`` moves every dataset whose root starts
    with ``old``; ``(old, new, names)`` only those whose ``dataset_name``
    is in ``names``, so a dataset a user adds to a mix that inherits a
    prefix (the tiny configs move the sample datasets to ``data/sample/``)
    keeps its own ``./data/...`` root."""
    _check_prefix(data_root)
    root = cfg.get('data_root')
    if not data_root or not isinstance(root, str) or \
            not root.startswith(data_root[0]):
        return None
    if len(data_root) == 3 and cfg.get('dataset_name') not in data_root[2]:
        return None
    return data_root[1] + root[len(data_root[0]):]


def child_configs(datasets: Sequence, pipeline_defaults: dict | None = None,
                  pipeline_overrides: dict | None = None,
                  data_root_prefix=None,
                  dataset_pipeline_overrides: dict | None = None,
                  pipeline_swaps: dict | None = None) -> list:
    """The children of a ``MixedDataset`` as it builds them: each config
    with the mix's pipeline settings and root prefix applied, paired with
    its original ``data_root`` (``(dataset object, None)`` for objects).
    ``tools/check_data.py`` builds them one by one with the same rules.

    Raises:
        KeyError: ``dataset_pipeline_overrides`` names a dataset not in the
            mix.
        ValueError: a malformed ``data_root_prefix``.
    """
    per_dataset = dict(dataset_pipeline_overrides or {})
    names = {d.get('dataset_name') for d in datasets if isinstance(d, dict)}
    unknown = sorted(set(per_dataset) - names)
    if unknown:
        raise KeyError(f'dataset_pipeline_overrides names datasets not in '
                       f'the mix: {unknown}; known: {sorted(map(str, names))}')
    _check_prefix(data_root_prefix)
    return [(apply_pipeline_defaults(
        d, pipeline_defaults,
        _merge(pipeline_overrides, per_dataset.get(d.get('dataset_name')),
               inner_wins=True), data_root_prefix, pipeline_swaps),
        d.get('data_root'))
        if isinstance(d, dict) else (d, None) for d in datasets]


def _build_child(cfg: dict, original_root):
    """Build a child dataset; a moved one that misses a file says where it
    was moved from and to."""
    try:
        return DATASETS.build(cfg)
    except FileNotFoundError as exc:
        root = cfg.get('data_root')
        if original_root is None or root == original_root:
            raise
        raise FileNotFoundError(
            f'{exc}\n(dataset {cfg.get("dataset_name")!r}: its data_root '
            f'{original_root!r} was moved to {root!r} by the mix\'s '
            f'data_root_prefix; put the data under {root!r}, or leave the '
            f'dataset out of data_root_prefix to read {original_root!r})'
        ) from exc


@DATASETS.register_module()
class MixedDataset(Dataset):
    """Concatenation of datasets, each repeated ``repeats[i]`` times.

    A repeat of 2.5 gives every sample twice plus a seeded random half of
    the samples once more (Sa2VA v2's fractional repeats); Sa2VA v1's habit
    of listing a dataset four times is ``repeats=4``. Each copy of a record
    is its own random draw (:meth:`get_sample`), as Sa2VA's repeats are. The
    index is three int arrays (dataset, local index, copy number), so it
    stays compact for millions of samples.

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
        pipeline_overrides: same shape, set regardless of the step (e.g.
            a smaller ``DynamicTiles`` for a CPU demo).
        pipeline_swaps: ``{transform type: None | step dict | [step
            dicts]}``: every step of that type in every child pipeline
            (nested mixes too) is replaced (``None`` drops it) before
            ``pipeline_defaults`` / ``pipeline_overrides`` apply, so a model
            config selects its backbone's image steps without touching the
            datasets (:func:`swap_pipeline_steps`: ``_inherit_`` carries
            arguments of the replaced step over, ``_by_`` / ``_cases_``
            picks by one of its arguments). A type that is not a registered
            transform raises ``KeyError``.
        dataset_pipeline_overrides: ``{dataset_name: {transform: {arg:
            value}}}``: overrides for the named children only (they win over
            ``pipeline_overrides``), e.g. one template for RefCOCO.
        data_root_prefix: ``(old, new, names)``: the children named in
            ``names`` whose ``data_root`` starts with ``old`` read from
            ``new`` instead (the family bases say ``./data/``; the tiny
            configs move the sample datasets to ``data/sample/``); a
            dataset a user adds keeps its root. ``(old, new)`` moves every
            child. A moved child that misses a file raises
            ``FileNotFoundError`` naming both roots.

    Attributes:
        modality_length: ``(len(self),) int64``, from the datasets.
    """

    def __init__(self, datasets: Sequence, repeats: Sequence[float] | None
                 = None, seed: int = 0, pipeline_defaults: dict | None = None,
                 pipeline_overrides: dict | None = None,
                 data_root_prefix: Sequence[str] | None = None,
                 dataset_pipeline_overrides: dict | None = None,
                 pipeline_swaps: dict | None = None):
        self.datasets = [
            _build_child(cfg, root) if isinstance(cfg, dict) else cfg
            for cfg, root in child_configs(
                datasets, pipeline_defaults, pipeline_overrides,
                data_root_prefix, dataset_pipeline_overrides,
                pipeline_swaps)]
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
        which, local, copies, lengths = [], [], [], []
        for d, (ds, rep) in enumerate(zip(self.datasets, repeats)):
            n = len(ds)
            whole = int(rep)
            frac = int(round((rep - whole) * n))
            idx = np.concatenate([np.tile(np.arange(n), whole),
                                  np.sort(rng.choice(n, frac, replace=False))])
            which.append(np.full(len(idx), d, dtype=np.int32))
            local.append(idx.astype(np.int64))
            copies.append(np.repeat(np.arange(whole + 1, dtype=np.int32),
                                  [n] * whole + [frac]))
            lengths.append(get_modality_lengths(ds)[idx])
        self._which = np.concatenate(which)
        self._local = np.concatenate(local)
        self._copy = np.concatenate(copies)
        self.modality_length = np.concatenate(lengths)

    def __len__(self) -> int:
        return len(self._which)

    def __getitem__(self, idx: int):
        return self.get_sample(idx)

    def get_sample(self, idx: int, draw: Sequence[int] = ()):
        """Sample ``idx`` of the mix: its dataset's record with the draw
        numbers of the enclosing mixes plus this mix's copy number (0 for
        the first copy of a record, 1 for the second, ...), so repeated
        copies are different random draws (question templates, objects,
        frames) of the same record."""
        ds = self.datasets[self._which[idx]]
        local = int(self._local[idx])
        draw = tuple(draw) + (int(self._copy[idx]), )
        if hasattr(ds, 'get_sample'):
            return ds.get_sample(local, draw)
        return ds[local]

    def summary(self) -> list[dict]:
        """Per dataset: name, records, repeat, samples in the mix."""
        counts = np.bincount(self._which, minlength=len(self.datasets))
        return [dict(name=getattr(d, 'dataset_name', type(d).__name__),
                     records=len(d), repeat=r, samples=int(c))
                for d, r, c in zip(self.datasets, self.repeats, counts)]
