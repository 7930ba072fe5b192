"""``Sa2VACheckpointHook``: mmengine's ``CheckpointHook`` that never leaves a
run without a loadable latest checkpoint.

mmengine's hook deletes the oldest checkpoint *before* writing the new one
(with ``max_keep_ckpts=1`` a kill during the save leaves nothing to resume)
and writes ``last_checkpoint`` in place. Here a save is, in this order:

1. the new checkpoint is written completely: ``Sa2VARunner.save_checkpoint``
   writes ``<name>.tmp-<pid>``, fsyncs it and renames it into place;
2. ``last_checkpoint`` is rewritten the same way (temporary file, fsync,
   rename) to name it;
3. only then the checkpoint that falls out of ``max_keep_ckpts`` is deleted.

A kill at any point leaves ``last_checkpoint`` naming a complete file (the
old one before step 2, the new one after). A kill before step 3 leaves the
old checkpoint behind as an extra file. Partial ``*.tmp-<pid>`` files of
killed saves are deleted when the next run starts (``before_train``,
logged). ``Sa2VARunner`` builds this hook wherever a config names
``CheckpointHook``; the arguments are mmengine's.
"""
from __future__ import annotations

import os.path as osp

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook

from ..registry import HOOKS
from .checkpoint import remove_partial_files, write_text_atomic


@HOOKS.register_module()
class Sa2VACheckpointHook(CheckpointHook):
    """``CheckpointHook`` (same arguments) that writes the new checkpoint and
    ``last_checkpoint`` before deleting an old checkpoint (module
    docstring)."""

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if not is_main_process():
            return
        for directory in {self.out_dir, runner.work_dir}:
            if '://' in str(directory):
                continue
            for path in remove_partial_files(directory):
                runner.logger.warning(f'removed {path}: the partial file of '
                                      f'a save that was killed')

    def _save_checkpoint_with_step(self, runner, step, meta):
        drop = None
        if self.max_keep_ckpts > 0 and not (
                self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                drop = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids',
                                           list(self.keep_ckpt_ids))
        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir,
                                                     ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir, ckpt_filename, self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler, meta=meta,
            by_epoch=self.by_epoch, backend_args=self.backend_args,
            **self.args)
        if not is_main_process():
            return
        write_text_atomic(osp.join(runner.work_dir, 'last_checkpoint'),
                          self.last_ckpt)
        if drop is not None:
            old = self.file_backend.join_path(self.out_dir,
                                              self.filename_tmpl.format(drop))
            if old != self.last_ckpt:
                if self.file_backend.isfile(old):
                    self.file_backend.remove(old)
                elif self.file_backend.isdir(old):  # DeepSpeed checkpoints
                    self.file_backend.rmtree(old)
