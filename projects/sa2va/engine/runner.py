"""``Sa2VARunner``: mmengine's Runner with checkpoints fit for resuming.

What it changes, and why:

* **Loading** (``load_checkpoint``, used by ``resume`` and ``load_from``):
  ``torch.load(weights_only=True)`` with nothing allow-listed (the file is
  written in plain types, ``engine.checkpoint``); a model with
  ``complete_state_dict`` (``Sa2VAModel``) checks the file strictly against
  its trainable parameters (unknown or missing trainable keys raise, naming
  them) and the frozen weights are taken from the built model, so loading is
  strict and reports no "missing keys".
* **Saving** (``save_checkpoint``): the checkpoint is written to
  ``<name>.tmp-<pid>`` and renamed (``os.replace``), so a killed run never
  leaves a truncated ``iter_N.pth``; ``meta['rng_state']`` holds the torch /
  CUDA / numpy / Python random state.
* **Resume** (``resume``): after mmengine's resume (iteration, optimizer,
  schedulers, message hub) the random state of the checkpoint is restored.
* **Loops**: a train loop given as mmengine's ``IterBasedTrainLoop`` or
  ``EpochBasedTrainLoop`` (by ``type`` or by ``max_iters`` / ``max_epochs``)
  is built as ``ResumableIterBasedTrainLoop`` / ``ResumableEpochBasedTrainLoop``
  (same arguments; resume positions the sampler instead of re-reading data).
  The replacement is logged.
* **CPU distributed** (``setup_env``, ``wrap_model``): a ``pytorch``-launched
  run without CUDA joins the process group with gloo itself (mmengine's
  ``init_dist`` calls ``torch.cuda.set_device``) and wraps the model in DDP
  without ``device_ids``.
* **Config text**: formatted once (``_PrettyTextOnce``) instead of for the
  log, the dump and every checkpoint.

Exactness: a resumed single-process run reproduces the uninterrupted run's
losses bit for bit on CPU. With several ranks every rank gets rank 0's random
state (only rank 0 writes the checkpoint); mmengine seeds all ranks the same
(``diff_rank_seed=False``), but their streams diverge with different batch
shapes, so dropout masks after a distributed resume are valid draws, not the
uninterrupted run's ones. CUDA kernels may also not be bitwise
deterministic.
"""
from __future__ import annotations

import copy
import os
import os.path as osp
import re
from collections import OrderedDict

import torch
import torch.distributed as torch_dist

from mmengine.config import Config
from mmengine.device import get_device
from mmengine.dist import is_main_process
from mmengine.model import MMDistributedDataParallel, is_model_wrapper
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop, Runner
from mmengine.runner.checkpoint import _load_checkpoint_to_model

from ..registry import RUNNERS
from .checkpoint import (get_rng_state, load_checkpoint_file,
                         make_checkpoint_weights_only, set_rng_state)
from .loops import ResumableEpochBasedTrainLoop, ResumableIterBasedTrainLoop

_RESUMABLE = {'IterBasedTrainLoop': ResumableIterBasedTrainLoop,
              'EpochBasedTrainLoop': ResumableEpochBasedTrainLoop}


def resumable_loop_cfg(loop_cfg: dict) -> dict:
    """``loop_cfg`` with mmengine's stock train loops replaced by the
    resumable ones (other types unchanged).

    ``{'type': 'IterBasedTrainLoop', ...}``, ``{'by_epoch': False,
    'max_iters': n}`` -> ``{'type': ResumableIterBasedTrainLoop, ...}``;
    likewise for epochs.
    """
    cfg = dict(loop_cfg)
    loop_type = cfg.get('type')
    if loop_type is None:
        by_epoch = cfg.pop('by_epoch', 'max_epochs' in cfg)
        loop_type = 'EpochBasedTrainLoop' if by_epoch else 'IterBasedTrainLoop'
    if isinstance(loop_type, str):
        name = loop_type.split('.')[-1]
        if name in _RESUMABLE:
            loop_type = _RESUMABLE[name]
    elif loop_type in (IterBasedTrainLoop, EpochBasedTrainLoop):
        loop_type = _RESUMABLE[loop_type.__name__]
    cfg['type'] = loop_type
    return cfg


class _PrettyTextOnce(Config):
    """A ``Config`` whose ``pretty_text`` is formatted once: mmengine formats
    the whole config with yapf for the start-up log, the dumped config and
    every checkpoint's meta, several seconds each for the Sa2VA mix. The
    runner does not change its config after building, so one text serves."""

    @property
    def pretty_text(self) -> str:
        text = self.__dict__.get('_sa2va_pretty_text')
        if text is None:
            text = super().pretty_text
            object.__setattr__(self, '_sa2va_pretty_text', text)
        return text


@RUNNERS.register_module()
class Sa2VARunner(Runner):
    """mmengine ``Runner`` (same arguments, ``runner_type='Sa2VARunner'``)
    with weights-only, strict, atomic checkpoints and exact resume (see the
    module docstring)."""

    _resumed_rng_state = None

    @classmethod
    def from_cfg(cls, cfg):
        """Build from a config (mmengine's ``from_cfg``); the config text is
        formatted once for the log, the dump and the checkpoints."""
        if isinstance(cfg, Config) and not isinstance(cfg, _PrettyTextOnce):
            cfg = copy.copy(cfg)
            object.__setattr__(cfg, '__class__', _PrettyTextOnce)
        return super().from_cfg(cfg)

    def build_train_loop(self, loop):
        """Build the train loop; stock mmengine loops become resumable."""
        if isinstance(loop, dict):
            new = resumable_loop_cfg(loop)
            if new['type'] is not loop.get('type'):
                self.logger.info(f'train loop: {new["type"].__name__} '
                                 f'(resume positions the sampler)')
            loop = new
        return super().build_train_loop(loop)

    def setup_env(self, env_cfg: dict) -> None:
        """mmengine's environment setup; a ``pytorch``-launched run without
        CUDA joins the process group here (gloo), because mmengine's
        ``init_dist`` calls ``torch.cuda.set_device`` first."""
        if (self._launcher == 'pytorch' and not torch.cuda.is_available()
                and not torch_dist.is_initialized()):
            backend = (env_cfg.get('dist_cfg') or {}).get('backend', 'gloo')
            if backend != 'gloo':
                raise RuntimeError(
                    f'distributed training without CUDA needs the gloo '
                    f'backend, the config says {backend!r}: add '
                    f'--cfg-options env_cfg.dist_cfg.backend=gloo')
            torch_dist.init_process_group(
                backend='gloo', rank=int(os.environ['RANK']),
                world_size=int(os.environ['WORLD_SIZE']))
        super().setup_env(env_cfg)

    def wrap_model(self, model_wrapper_cfg, model):
        """mmengine's wrapping, except distributed training on CPU (gloo):
        mmengine passes ``device_ids=[LOCAL_RANK]``, which DDP refuses for a
        CPU module, so the model is wrapped without device ids. DDP's
        ``find_unused_parameters`` comes from the config (default False:
        every trainable parameter of Sa2VAModel gets a gradient in every
        step, through zero-weight paths when a batch has no mask)."""
        if (self.distributed and model_wrapper_cfg is None
                and not is_model_wrapper(model) and get_device() == 'cpu'):
            find = self.cfg.get('find_unused_parameters', False)
            self.logger.info(f'DDP on CPU, find_unused_parameters={find}')
            return MMDistributedDataParallel(
                module=model.to('cpu'), broadcast_buffers=False,
                find_unused_parameters=find)
        return super().wrap_model(model_wrapper_cfg, model)

    def load_checkpoint(self, filename: str, map_location='cpu',
                        strict: bool = False,
                        revise_keys: list = [(r'^module\.', '')]):
        """Load a run checkpoint into the model (weights-only ``torch.load``;
        strict on the trainable keys for models with
        ``complete_state_dict``).

        Args:
            filename: a local ``.pth``.
            map_location: as ``torch.load``.
            strict: strict key check for models without
                ``complete_state_dict`` (mmengine's meaning).
            revise_keys: ``(regex, replacement)`` pairs for the keys.

        Returns:
            the checkpoint dict.
        """
        checkpoint = load_checkpoint_file(filename, map_location)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(self.model) \
            else self.model
        state = checkpoint.get('state_dict', checkpoint)
        metadata = getattr(state, '_metadata', None)
        state = OrderedDict((self._revise(k, revise_keys), v)
                            for k, v in state.items())
        if metadata is not None:
            state._metadata = metadata
        if hasattr(model, 'complete_state_dict'):
            state = model.complete_state_dict(state, source=filename)
            strict = True
        _load_checkpoint_to_model(model, {'state_dict': state}, strict,
                                  revise_keys=[])
        self._has_loaded = True
        self._resumed_rng_state = checkpoint.get('meta', {}).get('rng_state')
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint

    @staticmethod
    def _revise(key: str, revise_keys) -> str:
        for pattern, repl in revise_keys:
            key = re.sub(pattern, repl, key)
        return key

    def resume(self, filename: str, resume_optimizer: bool = True,
               resume_param_scheduler: bool = True,
               map_location='default') -> None:
        """mmengine's resume, then the checkpoint's random state."""
        super().resume(filename, resume_optimizer, resume_param_scheduler,
                       map_location)
        if self._resumed_rng_state is not None:
            set_rng_state(self._resumed_rng_state)
            self.logger.info(f'resume: random state of iteration {self.iter} '
                             f'restored')
        else:
            self.logger.warning(f'{filename} has no rng_state: random draws '
                                f'after the resume differ from an '
                                f'uninterrupted run')

    def save_checkpoint(self, out_dir: str, filename: str,
                        file_client_args=None, save_optimizer: bool = True,
                        save_param_scheduler: bool = True, meta=None,
                        by_epoch: bool = True, backend_args=None):
        """mmengine's ``save_checkpoint`` (same arguments) with
        ``meta['rng_state']``, plain types only, and, for a local
        ``out_dir``, a temporary file renamed into place."""
        meta = dict(meta or {}, rng_state=get_rng_state())
        local = (file_client_args is None and backend_args is None
                 and '://' not in str(out_dir))
        target = f'{filename}.tmp-{os.getpid()}' if local else filename
        super().save_checkpoint(out_dir, target, file_client_args,
                                save_optimizer, save_param_scheduler, meta,
                                by_epoch, backend_args)
        if local and is_main_process():
            os.replace(osp.join(out_dir, target), osp.join(out_dir, filename))

    def call_hook(self, fn_name: str, **kwargs) -> None:
        """Call the hooks; a checkpoint about to be saved is then made
        weights-only loadable (after every hook has added its part)."""
        super().call_hook(fn_name, **kwargs)
        if fn_name == 'before_save_checkpoint':
            make_checkpoint_weights_only(kwargs['checkpoint'])
