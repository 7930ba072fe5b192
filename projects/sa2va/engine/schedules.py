"""Learning-rate schedules that follow the length of the run.

``WarmupDecayLR`` is one mmengine parameter scheduler for the whole run: a
linear warm-up over ``warmup_ratio`` of the iterations, then a cosine (or
linear, or constant) decay to ``eta_min`` at the last iteration. Its ``end``
is left out of the config, so mmengine's runner fills in the run's real
length (``max_iters``; for an ``EpochBasedTrainLoop`` ``max_epochs`` x
iterations per epoch) when it builds the scheduler. ``--cfg-options
train_cfg.max_iters=10`` or a six-batch dataset then gives the same curve,
shrunk, instead of a cosine that ends at a fixed iteration or a warm-up of
zero iterations (``end should be larger than begin``)::

    param_scheduler = [dict(type='WarmupDecayLR', warmup_ratio=0.05,
                            start_factor=1e-5, eta_min=0.0, by_epoch=False)]

``simulate_lr`` steps copies of a runner's built schedulers the way
``ParamSchedulerHook`` does and returns the learning rate every remaining
iteration will apply; ``schedule_problems`` names what is wrong with such a
curve (the start-summary hook refuses a run on it).
"""
from __future__ import annotations

import copy
import math
from typing import Sequence

import numpy as np
from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import INF, _ParamScheduler

from ..registry import PARAM_SCHEDULERS

DECAYS = ('cosine', 'linear', 'constant')


def warmup_decay_factor(t: int, total: int, warmup: int, start_factor: float,
                        decay: str, eta_min_factor: float) -> float:
    """The LR factor (of the base LR) applied at iteration ``t`` of
    ``total``: linear from ``start_factor`` over the ``warmup`` iterations
    ``0 .. warmup - 1``, reaching 1 at ``t == warmup - 1`` (as mmengine's
    ``LinearLR(begin=0, end=warmup)``, Sa2VA's warm-up), then ``decay``
    from 1 at ``t == warmup`` towards ``eta_min_factor``, reached at
    ``t == total`` (mmengine's cosine convention: the last applied value is
    one step short of it)."""
    if t < warmup:
        return start_factor + (1.0 - start_factor) * t / max(warmup - 1, 1)
    span = max(total - warmup, 1)
    x = min(t - warmup, span) / span
    if decay == 'cosine':
        shape = 0.5 * (1.0 + math.cos(math.pi * x))
    elif decay == 'linear':
        shape = 1.0 - x
    else:
        shape = 1.0
    return eta_min_factor + (1.0 - eta_min_factor) * shape


def warmup_iters_for(total: int, warmup_ratio: float,
                     warmup_iters: int | None = None) -> int:
    """Warm-up length: ``warmup_iters`` if given, else
    ``round(warmup_ratio * total)``, at most ``total - 1`` (the last
    iteration is never warm-up) and at least 1 when the ratio is > 0."""
    if warmup_iters is None:
        warmup_iters = int(round(warmup_ratio * total))
        if warmup_ratio > 0:
            warmup_iters = max(warmup_iters, 1)
    return max(0, min(int(warmup_iters), total - 1))


@PARAM_SCHEDULERS.register_module()
class WarmupDecayLR(LRSchedulerMixin, _ParamScheduler):
    """Linear warm-up, then cosine / linear / constant decay, sized from
    the run's length when it is built.

    Args:
        optimizer: the optimizer (wrapper).
        warmup_ratio: fraction of the iterations spent warming up (Sa2VA:
            0.05); ignored when ``warmup_iters`` is given.
        warmup_iters: an absolute warm-up length instead of the ratio.
        start_factor: LR factor at iteration 0 (Sa2VA: 1e-5).
        decay: ``'cosine'`` (Sa2VA), ``'linear'`` or ``'constant'``.
        eta_min: the LR the decay approaches at the end (absolute).
        eta_min_ratio: the same as a fraction of each group's base LR
            (give one of the two).
        begin: first iteration of the schedule (default 0).
        end: iteration at which it ends; leave it out of the config so the
            runner sets the run's total iterations.
        by_epoch: must be False (the schedule steps every iteration).
        last_step, verbose: as mmengine's schedulers.

    Raises:
        ValueError: for an unknown ``decay``, ``by_epoch=True``, both
            ``eta_min`` and ``eta_min_ratio``, or ``end`` not set.
    """

    def __init__(self, optimizer, warmup_ratio: float = 0.0,
                 warmup_iters: int | None = None, start_factor: float = 1e-5,
                 decay: str = 'cosine', eta_min: float | None = None,
                 eta_min_ratio: float | None = None, begin: int = 0,
                 end: int = INF, last_step: int = -1, by_epoch: bool = False,
                 verbose: bool = False):
        if decay not in DECAYS:
            raise ValueError(f'WarmupDecayLR: decay {decay!r} not in {DECAYS}')
        if by_epoch:
            raise ValueError('WarmupDecayLR steps every iteration: set '
                             'by_epoch=False (its length comes from the run)')
        if end == INF:
            raise ValueError(
                'WarmupDecayLR needs an end: leave `end` out of the config '
                'and let the runner set the run length, or give end=N')
        if eta_min is not None and eta_min_ratio is not None:
            raise ValueError('WarmupDecayLR: give eta_min or eta_min_ratio, '
                             'not both')
        if not 0 <= warmup_ratio < 1:
            raise ValueError(f'warmup_ratio must be in [0, 1), got '
                             f'{warmup_ratio}')
        self.total = int(end) - int(begin)
        self.warmup = warmup_iters_for(self.total, warmup_ratio, warmup_iters)
        self.start_factor = float(start_factor)
        self.decay = decay
        self.eta_min = eta_min
        self.eta_min_ratio = 0.0 if eta_min is None and eta_min_ratio is None \
            else eta_min_ratio
        super().__init__(optimizer, begin=begin, end=end, last_step=last_step,
                         by_epoch=False, verbose=verbose)

    def _eta_min_factor(self, base: float) -> float:
        if self.eta_min_ratio is not None:
            return float(self.eta_min_ratio)
        return float(self.eta_min) / base if base else 0.0

    def _get_value(self) -> list[float]:
        t = self.last_step
        return [base * warmup_decay_factor(
            t, self.total, self.warmup, self.start_factor, self.decay,
            self._eta_min_factor(base)) for base in self.base_values]


class _ShadowOptimizer:
    """Stands in for the optimizer when stepping copies of schedulers: the
    parameter groups' settings without the parameters."""

    def __init__(self, param_groups: Sequence[dict]):
        self.param_groups = [{k: v for k, v in g.items() if k != 'params'}
                             for g in param_groups]
        self._global_step = 0

        def step():  # noqa: D401 - what mmengine's counter wraps
            return None
        step._with_counter = True
        self.step = step


def _flat(schedulers) -> list:
    if isinstance(schedulers, dict):
        return [s for group in schedulers.values() for s in _flat(group)]
    return list(schedulers or [])


def simulate_lr(schedulers, param_groups: Sequence[dict], start_iter: int,
                max_iters: int, epoch_length: int | None = None) -> np.ndarray:
    """The learning rates that iterations ``start_iter .. max_iters - 1``
    will apply, per parameter group.

    Copies of the built ``schedulers`` (a list, or mmengine's dict of
    lists; state included, so a resumed run continues where it is) are
    stepped on a stand-in optimizer as ``ParamSchedulerHook`` steps them:
    iteration schedulers after every iteration, epoch schedulers after
    every ``epoch_length`` iterations (``None``: an iteration-based loop,
    whose epoch schedulers never step).

    Returns:
        ``(max_iters - start_iter, n_groups) float64``.
    """
    shadow = _ShadowOptimizer(param_groups)
    copies = []
    for sched in _flat(schedulers):
        dup = copy.copy(sched)
        dup.__dict__ = {k: copy.deepcopy(v) for k, v in sched.__dict__.items()
                        if k != 'optimizer'}
        dup.optimizer = shadow
        if dup.param_name != 'lr':
            continue
        copies.append(dup)
    out = np.zeros((max(max_iters - start_iter, 0), len(shadow.param_groups)))
    for row, it in enumerate(range(start_iter, max_iters)):
        out[row] = [g['lr'] for g in shadow.param_groups]
        for s in copies:
            if not s.by_epoch:
                s.step()
        if epoch_length and (it + 1) % epoch_length == 0:
            for s in copies:
                if s.by_epoch:
                    s.step()
    return out


def base_lrs(param_groups: Sequence[dict]) -> np.ndarray:
    """Each group's base LR (``initial_lr`` once a scheduler exists)."""
    return np.array([float(g.get('initial_lr', g['lr'])) for g in
                     param_groups])


def schedule_end(schedulers, epoch_length: int | None) -> float:
    """The iteration at which the last LR scheduler stops changing the LR
    (``inf`` for an open-ended one)."""
    ends = []
    for s in _flat(schedulers):
        if s.param_name != 'lr':
            continue
        end = s.end
        if s.by_epoch and end != INF:
            end = end * epoch_length if epoch_length else INF
        ends.append(end)
    return max(ends) if ends else INF


def schedule_problems(lrs: np.ndarray, bases: np.ndarray, start_iter: int,
                      sched_end: float, total: int,
                      min_lr_ratio: float = 1e-3,
                      max_low_fraction: float = 0.05) -> list[str]:
    """What is wrong with a simulated curve (empty: nothing).

    Args:
        lrs: ``simulate_lr``'s output from ``start_iter``.
        bases: each group's base LR.
        sched_end: ``schedule_end``.
        total: the run's iterations.
        min_lr_ratio, max_low_fraction: after the warm-up (up to the
            first iteration at the curve's maximum) at most this fraction
            of the iterations may apply at most ``min_lr_ratio`` x the
            base LR (a cosine to 0 spends 2 % of its decay there).

    Problems: the schedule ends before training does while the LR is not
    back at its base value (the rest trains at the last, decayed LR); too
    many iterations after the warm-up at a negligible LR; an LR of 0 at
    the first iteration.
    """
    problems = []
    if not len(lrs):
        return problems
    ratio = lrs / np.maximum(bases[None], 1e-30)
    if sched_end < total and not np.allclose(ratio[-1], 1.0, rtol=1e-6):
        problems.append(
            f'the LR schedule ends at iteration {int(sched_end)} but training '
            f'runs {total} iterations: iterations {int(sched_end)}..{total - 1}'
            f' would train at {lrs[-1].max():.3g} ({ratio[-1].max():.3g} x the '
            f'base LR); build the schedule from the run length (leave `end` '
            f'out, e.g. WarmupDecayLR)')
    first = ratio.max(1)
    peak = int(np.argmax(first >= first.max() * (1 - 1e-9)))
    after = first[peak:]
    low = int((after <= min_lr_ratio * (1 + 1e-9)).sum())
    if len(after) and low > max_low_fraction * len(after):
        problems.append(
            f'{low} of the {len(after)} iterations after the warm-up '
            f'(iterations {start_iter + peak}..{start_iter + len(first) - 1}) '
            f'apply at most {min_lr_ratio:g} x the base LR (lowest '
            f'{lrs[peak:].min():.3g}): the run would barely learn')
    if start_iter == 0 and first[0] <= 0:
        problems.append('the LR is 0 at the first iteration')
    return problems
