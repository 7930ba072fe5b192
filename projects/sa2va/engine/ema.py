"""EMA teacher update of the mask <-> caption cycle model."""
from __future__ import annotations

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ..registry import HOOKS


@HOOKS.register_module()
class CycleEMAHook(Hook):
    """Updates the cycle model's EMA teacher after every optimizer step.

    With gradient accumulation (``accumulative_counts = n``) the optimizer
    steps on every n-th iteration (and the last one); the hook asks the
    optim wrapper (``should_update()``) after the iteration, so the shadow
    moves exactly once per optimizer step. The shadow itself lives in the
    model's state dict (``ema_shadow.*``, fp32) and is saved / resumed with
    the checkpoint.

    Args:
        caption_log_interval: every this many iterations, log the teacher's
            last pseudo captions (0 = never).
        max_logged_captions: captions per log entry.
    """

    priority = 'NORMAL'

    def __init__(self, caption_log_interval: int = 0, max_logged_captions: int = 2):
        self.caption_log_interval = int(caption_log_interval)
        self.max_logged_captions = int(max_logged_captions)

    @staticmethod
    def _model(runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(model, 'ema_update'):
            raise TypeError(f'CycleEMAHook needs a model with ema_update(), got '
                            f'{type(model).__name__}')
        return model

    def before_train(self, runner) -> None:
        self._model(runner)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        model = self._model(runner)
        if runner.optim_wrapper.should_update():
            model.ema_update()
        if (self.caption_log_interval > 0
                and self.every_n_train_iters(runner, self.caption_log_interval)):
            for i, text in enumerate(model.last_pseudo_captions[:self.max_logged_captions]):
                runner.logger.info(f'iter {runner.iter + 1} pseudo caption {i}: {text!r}')
