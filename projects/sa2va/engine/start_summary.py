"""``StartSummaryHook``: what the run is about to do, printed before the
first iteration, and a refusal of schedules that would waste it.

The summary (rank 0's log) lists the datasets with their records, repeats
and samples; the batch, world size and accumulation; iterations per epoch
and in total; trainable parameters by module group; and the learning rate
the schedule will apply at a few iterations (the real schedulers, copied and
stepped as ``ParamSchedulerHook`` steps them). The hook raises before
training when the schedule ends while training goes on at a decayed LR, or
when more than ``max_low_fraction`` of the iterations after the warm-up get
less than ``min_lr_ratio`` of the base LR; ``check_schedule=False``
(``--cfg-options default_hooks.start_summary.check_schedule=False``) lets
such a run start with a warning instead.
"""
from __future__ import annotations

from collections import OrderedDict

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import EpochBasedTrainLoop

from ..registry import HOOKS
from .schedules import (base_lrs, schedule_end, schedule_problems,
                        simulate_lr)


def dataset_rows(dataset, depth: int = 0) -> list[str]:
    """One line per dataset of a (nested) mix: name, records, repeat,
    samples it contributes."""
    if hasattr(dataset, 'summary') and hasattr(dataset, 'datasets'):
        rows = []
        for child, entry in zip(dataset.datasets, dataset.summary()):
            pad = '  ' * depth
            rows.append(f'{pad}{entry["name"]:<{36 - len(pad)}s} '
                        f'{entry["records"]:>9d} {entry["repeat"]:>7g} '
                        f'{entry["samples"]:>9d}')
            if hasattr(child, 'datasets'):
                rows.extend(dataset_rows(child, depth + 1))
        return rows
    name = getattr(dataset, 'dataset_name', type(dataset).__name__)
    return [f'{name:36s} {len(dataset):>9d} {1:>7g} {len(dataset):>9d}']


def trainable_by_group(model, depth: int = 2) -> 'OrderedDict[str, tuple]':
    """``{module prefix: (trainable, total)}`` parameter counts, grouped by
    the first ``depth`` non-numeric components of the parameter names
    (``text_hidden_fcs.0.weight`` and ``text_hidden_fcs.2.bias`` are one
    group)."""
    groups: OrderedDict = OrderedDict()
    for name, p in model.named_parameters():
        parts = [c for c in name.split('.') if not c.isdigit()]
        key = '.'.join(parts[:depth])
        t, n = groups.get(key, (0, 0))
        groups[key] = (t + (p.numel() if p.requires_grad else 0),
                       n + p.numel())
    return groups


def lr_points(total: int, warmup_end: int) -> list[int]:
    """A few iterations worth showing: the start, around the warm-up end,
    quarter points and the last."""
    points = {0, max(warmup_end - 1, 0), warmup_end, total // 4, total // 2,
              3 * total // 4, total - 1}
    return sorted(p for p in points if 0 <= p < total)


@HOOKS.register_module()
class StartSummaryHook(Hook):
    """Prints the run summary before training and checks the LR schedule.

    Args:
        check_schedule: raise on a bad schedule (False: warn and train).
        min_lr_ratio: an LR below this fraction of the base LR counts as
            negligible.
        max_low_fraction: the fraction of the post-warm-up iterations that
            may be negligible (a cosine to 0 spends 2 % there).
        param_depth: name components that make a parameter group.
    """

    priority = 'VERY_LOW'

    def __init__(self, check_schedule: bool = True, min_lr_ratio: float = 1e-3,
                 max_low_fraction: float = 0.05, param_depth: int = 2):
        self.check_schedule = check_schedule
        self.min_lr_ratio = min_lr_ratio
        self.max_low_fraction = max_low_fraction
        self.param_depth = param_depth

    def before_train(self, runner) -> None:
        lines = ['run summary', '-' * 70]
        loader = runner.train_dataloader
        dataset = loader.dataset
        lines.append(f'{"dataset":36s} {"records":>9s} {"repeat":>7s} '
                     f'{"samples":>9s}')
        lines.extend(dataset_rows(dataset))
        lines.append(f'{"total":36s} {"":>9s} {"":>7s} {len(dataset):>9d}')
        accum = getattr(runner.optim_wrapper, '_accumulative_counts', 1)
        by_epoch = isinstance(runner.train_loop, EpochBasedTrainLoop)
        epoch_length = len(loader)
        total = runner.max_iters
        lines.append(
            f'batch {loader.batch_size} per process x {runner.world_size} '
            f'processes, accumulate {accum}: {epoch_length} iterations per '
            f'epoch, {total} in total'
            + (f' ({runner.max_epochs} epochs)' if by_epoch else
               f' ({total / max(epoch_length, 1):.2f} epochs)'))
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        groups = trainable_by_group(model, self.param_depth)
        n_train = sum(t for t, _ in groups.values())
        n_all = sum(n for _, n in groups.values())
        lines.append(f'trainable parameters: {n_train:,} of {n_all:,}')
        for key, (t, n) in groups.items():
            if t:
                lines.append(f'  {key:40s} {t:>14,d} of {n:>14,d}')
        problems = self._schedule_lines(runner, lines, total,
                                        epoch_length if by_epoch else None)
        runner.logger.info('\n'.join(lines))
        if problems:
            text = ('bad learning-rate schedule:\n  - ' + '\n  - '.join(
                problems) + '\n(set default_hooks.start_summary.'
                'check_schedule=False to train anyway)')
            if self.check_schedule:
                raise RuntimeError(text)
            runner.logger.warning(text)

    def _schedule_lines(self, runner, lines, total, epoch_length):
        schedulers = runner.param_schedulers
        optim = runner.optim_wrapper
        if hasattr(optim, 'optim_wrappers'):   # several optimizers
            optim = next(iter(optim.optim_wrappers.values()))
            if isinstance(schedulers, dict):
                schedulers = next(iter(schedulers.values()))
        groups = optim.param_groups
        start = runner.iter
        lrs = simulate_lr(schedulers, groups, start, total, epoch_length)
        if not len(lrs):
            return []
        bases = base_lrs(groups)
        first = lrs[:, 0]
        warmup_end = start + int(
            (first >= first.max() * (1 - 1e-9)).argmax())
        lines.append(f'learning rate (group 0, base {bases[0]:.3g}), '
                     f'warm-up until iteration {warmup_end}:')
        lines.append('  ' + ', '.join(
            f'iter {p}: {lrs[p - start, 0]:.3g}'
            for p in lr_points(total, warmup_end) if p >= start))
        return schedule_problems(
            lrs, bases, start, schedule_end(schedulers, epoch_length),
            total, self.min_lr_ratio, self.max_low_fraction)
