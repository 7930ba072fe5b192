"""Training hooks of the plugin."""
from __future__ import annotations

from mmengine.hooks import Hook
from mmengine.dist import all_reduce_dict, get_world_size

from ..registry import HOOKS


@HOOKS.register_module()
class DataStatsHook(Hook):
    """Logs the data counters that samples carry (``data_stats``).

    Counters are made where the work happens, in dataloader workers
    (skipped bad records per reason, repaired prompt masks, dropped turns,
    samples), summed by the collate function, accumulated here, summed over
    ranks and logged every ``interval`` iterations and at the end of each
    epoch, as ``data_stats: samples=16000 skipped/missing_image=3 ...``.
    The totals are also kept in the message hub (``data_stats`` info) and
    in checkpoints, so a resumed run continues them.
    """

    priority = 'LOW'

    def __init__(self, interval: int = 50):
        self.interval = interval
        self.totals: dict[str, int] = {}

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if isinstance(data_batch, dict):
            for k, v in (data_batch.get('data_stats') or {}).items():
                self.totals[k] = self.totals.get(k, 0) + int(v)
        if self.every_n_train_iters(runner, self.interval):
            self._log(runner)

    def after_train_epoch(self, runner) -> None:
        self._log(runner)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keep this rank's totals in the checkpoint (plain ints)."""
        checkpoint.setdefault('meta', {})['data_stats'] = dict(self.totals)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Resume continues the totals instead of restarting at 0."""
        saved = (checkpoint.get('meta') or {}).get('data_stats') or {}
        self.totals = {k: int(v) for k, v in saved.items()}

    def _log(self, runner) -> None:
        totals = dict(self.totals)
        if get_world_size() > 1:
            import torch
            keys = sorted(totals)
            tensor_dict = {k: torch.tensor(float(totals[k])) for k in keys}
            all_reduce_dict(tensor_dict, op='sum')
            totals = {k: int(v.item()) for k, v in tensor_dict.items()}
        runner.message_hub.update_info('data_stats', totals)
        text = ' '.join(f'{k}={v}' for k, v in sorted(totals.items()))
        runner.logger.info(f'data_stats: {text or "(none yet)"}')
