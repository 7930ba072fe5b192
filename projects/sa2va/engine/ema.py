"""EMA teacher update of the mask <-> caption cycle model."""
from __future__ import annotations

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ..registry import HOOKS


@HOOKS.register_module()
class CycleEMAHook(Hook):
    """Updates the cycle model's EMA teacher after every optimizer step, and
    logs what the cycle does between the losses.

    With gradient accumulation (``accumulative_counts = n``) the optimizer
    steps on every n-th iteration (and the last one); the hook asks the
    optim wrapper (``should_update()``) after the iteration, so the shadow
    moves exactly once per optimizer step. The shadow itself lives in the
    model's state dict (``ema_shadow.*``, fp32) and is saved / resumed with
    the checkpoint.

    Every ``caption_log_interval`` iterations it logs the teacher's last
    pseudo captions and the student's hard (straight-through Gumbel)
    captions of a loop-1 batch as text; every ``grad_log_interval``
    iterations it records the gradient norms of the caption path (the
    model's ``grad_probe``: ``grad_<loop1|ref>_text_embeds`` / ``_lora`` /
    ``_mlp1``, this rank's) into the message hub as ``train/...`` scalars.

    Args:
        caption_log_interval: caption logging period (0 = never).
        max_logged_captions: captions per log entry.
        grad_log_interval: gradient-norm period (0 = never).
    """

    priority = 'NORMAL'

    def __init__(self, caption_log_interval: int = 0, max_logged_captions: int = 2,
                 grad_log_interval: int = 0):
        self.caption_log_interval = int(caption_log_interval)
        self.max_logged_captions = int(max_logged_captions)
        self.grad_log_interval = int(grad_log_interval)

    @staticmethod
    def _model(runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(model, 'ema_update'):
            raise TypeError(f'CycleEMAHook needs a model with ema_update(), got '
                            f'{type(model).__name__}')
        return model

    def before_train(self, runner) -> None:
        self._model(runner)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self.grad_log_interval > 0 and self.every_n_train_iters(
                runner, self.grad_log_interval):
            model = self._model(runner)
            # the dual loop logs per-loop parameter norms itself (g1 / g2)
            model.grad_probe.start(params=model.dual_loop is None)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        model = self._model(runner)
        if runner.optim_wrapper.should_update():
            model.ema_update()
        for key, value in model.grad_probe.stop().items():
            runner.message_hub.update_scalar(f'train/{key}', value)
        if (self.caption_log_interval > 0
                and self.every_n_train_iters(runner, self.caption_log_interval)):
            n = self.max_logged_captions
            for i, text in enumerate(model.last_pseudo_captions[:n]):
                runner.logger.info(f'iter {runner.iter + 1} pseudo caption {i}: {text!r}')
            for i, text in enumerate(model.last_student_captions[:n]):
                runner.logger.info(f'iter {runner.iter + 1} student hard caption {i}: '
                                   f'{text!r}')
