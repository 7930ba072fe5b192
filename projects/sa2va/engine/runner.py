"""``Sa2VARunner``: mmengine's Runner with checkpoints fit for resuming.

What it changes, and why:

* **Loading** (``load_checkpoint``, used by ``load_from``):
  ``torch.load(weights_only=True)`` with nothing allow-listed (the file is
  written in plain types, ``engine.checkpoint``); errors name the file (empty,
  truncated, refused global, NaN / Inf values unless
  ``allow_nonfinite_weights=True``, tensors of another shape); a model with
  ``complete_state_dict`` (``Sa2VAModel``) checks the file strictly against
  its trainable parameters (unknown or missing trainable keys raise, naming
  them) and the frozen weights are taken from the built model, so loading is
  strict and reports no "missing keys".
* **Resume** (``resume``, ``load_or_resume``): written here instead of
  mmengine's, which builds ``meta['config']`` of the checkpoint with
  ``Config.fromstring`` (a checkpoint could run code that way). Nothing of a
  checkpoint is evaluated; the world size is compared as a number. A
  checkpoint without meta, message hub, optimizer or scheduler state is an
  error naming the file unless ``resume_weights_only=True`` (weights only,
  training from iteration 0); ``resume=True`` without a checkpoint in the
  work dir is an error. After the states the checkpoint's random state is
  restored.
* **Saving** (``save_checkpoint``): the checkpoint is written to
  ``<name>.tmp-<pid>``, fsynced and renamed (``os.replace``), so a killed run
  never leaves a truncated ``iter_N.pth``; ``meta['rng_state']`` holds the
  torch / CUDA / numpy / Python random state, ``meta['world_size']`` the
  number of processes. mmengine's ``CheckpointHook`` is built as
  ``Sa2VACheckpointHook`` (the new checkpoint and ``last_checkpoint`` are
  written before an old checkpoint is deleted, ``engine.checkpoint_hook``).
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
from mmengine.runner import (EpochBasedTrainLoop, FlexibleRunner,
                             IterBasedTrainLoop, Runner)
from mmengine.runner.checkpoint import _load_checkpoint_to_model

from ..registry import RUNNERS
from .checkpoint import (CheckpointError, check_finite, check_shapes,
                         from_weights_only, fsync_replace, get_rng_state,
                         load_checkpoint_file, make_checkpoint_weights_only,
                         set_rng_state)
from .checkpoint_hook import Sa2VACheckpointHook
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


class _CheckpointRules:
    """Runner mixin: a checkpoint about to be saved is made weights-only
    loadable after every hook has added its part; the latest checkpoint of
    the work dir is found or its absence is an error."""

    def _latest_checkpoint(self) -> str:
        """The checkpoint ``last_checkpoint`` of the work dir names; raises
        ``FileNotFoundError`` saying what is missing."""
        record = osp.join(self.work_dir, 'last_checkpoint')
        if not osp.isfile(record):
            found = sorted(p for p in os.listdir(self.work_dir)
                           if p.endswith('.pth')) \
                if osp.isdir(self.work_dir) else []
            raise FileNotFoundError(
                f'--resume: there is no checkpoint to resume in the work dir '
                f'{self.work_dir} (no last_checkpoint file'
                + (f'; .pth files there: {found[:5]}, give one as --resume '
                   f'PATH' if found else '') +
                '). Start without --resume for a new run.')
        with open(record) as f:
            latest = f.read().strip()
        if not latest or not osp.exists(latest):  # DeepSpeed: a directory
            raise FileNotFoundError(
                f'--resume: {record} names {latest!r}, which does not exist '
                f'(moved work dir?); give the checkpoint as --resume PATH')
        return latest

    def call_hook(self, fn_name: str, **kwargs) -> None:
        super().call_hook(fn_name, **kwargs)
        if fn_name == 'before_save_checkpoint':
            make_checkpoint_weights_only(kwargs['checkpoint'])


@RUNNERS.register_module()
class Sa2VARunner(_CheckpointRules, Runner):
    """mmengine ``Runner`` (same arguments, ``runner_type='Sa2VARunner'``)
    with weights-only, strict, atomic checkpoints and exact resume (see the
    module docstring)."""

    # set from the config by from_cfg (top-level keys of the same names)
    resume_weights_only = False
    allow_nonfinite_weights = False

    @classmethod
    def from_cfg(cls, cfg):
        """Build from a config (mmengine's ``from_cfg``); the config text is
        formatted once for the log, the dump and the checkpoints."""
        if isinstance(cfg, Config) and not isinstance(cfg, _PrettyTextOnce):
            cfg = copy.copy(cfg)
            object.__setattr__(cfg, '__class__', _PrettyTextOnce)
        runner = super().from_cfg(cfg)
        for key in ('resume_weights_only', 'allow_nonfinite_weights'):
            setattr(runner, key, bool(cfg.get(key, False)))
        return runner

    def _log_env(self, env_cfg: dict) -> None:
        """mmengine's environment log without the full config text (several
        hundred lines for the Sa2VA mix): the config is written to the work
        dir (``dump_config``, and ``vis_data/config.py``) and the log names
        the file."""
        cfg = self.cfg
        self.cfg = Config()
        try:
            super()._log_env(env_cfg)
        finally:
            self.cfg = cfg
        if cfg._cfg_dict:
            name = osp.basename(cfg.filename) if cfg.filename else \
                f'{self.timestamp}.py'
            self.logger.info(f'config: {osp.join(self.work_dir, name)} (the '
                             f'whole config, written to the work dir)')

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

    # ---------------------------------------------------------- loading
    def _read_checkpoint(self, filename: str, map_location='cpu') -> dict:
        """The checkpoint dict of ``filename`` (weights-only load) with a
        ``state_dict`` of tensors; errors name the file."""
        checkpoint = load_checkpoint_file(filename, map_location)
        state = checkpoint.get('state_dict', checkpoint)
        if not isinstance(state, dict) or not state or not all(
                isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(
                f'{filename} has no state_dict of tensors (keys: '
                f'{sorted(map(str, checkpoint))[:10]})')
        return checkpoint

    def _load_state(self, checkpoint: dict, filename: str, strict: bool,
                    revise_keys) -> None:
        """Load the weights of a read checkpoint into the model: keys
        revised, values finite (unless ``allow_nonfinite_weights``), shapes
        equal to the model's, and for a model with ``complete_state_dict``
        every trainable key present and no unknown key."""
        model = self.model.module if is_model_wrapper(self.model) \
            else self.model
        state = checkpoint.get('state_dict', checkpoint)
        metadata = getattr(state, '_metadata', None)
        state = OrderedDict((self._revise(k, revise_keys), v)
                            for k, v in state.items())
        if metadata is not None:
            state._metadata = metadata
        bad = check_finite(state, filename, self.allow_nonfinite_weights)
        if bad:
            self.logger.warning(f'{filename}: loading {len(bad)} tensor(s) '
                                f'with NaN / Inf values ({bad[:5]}) as '
                                f'allow_nonfinite_weights asks')
        own = model.state_dict(trainable_only=False) \
            if hasattr(model, 'complete_state_dict') else model.state_dict()
        check_shapes(state, own, filename)
        if hasattr(model, 'complete_state_dict'):
            state = model.complete_state_dict(state, source=filename)
            strict = True
        _load_checkpoint_to_model(model, {'state_dict': state}, strict,
                                  revise_keys=[])

    def load_checkpoint(self, filename: str, map_location='cpu',
                        strict: bool = False,
                        revise_keys: list = [(r'^module\.', '')]):
        """Load a run checkpoint into the model (``load_from``; weights-only
        ``torch.load``; strict on the trainable keys for models with
        ``complete_state_dict``).

        Args:
            filename: a local ``.pth``.
            map_location: as ``torch.load``.
            strict: strict key check for models without
                ``complete_state_dict`` (mmengine's meaning).
            revise_keys: ``(regex, replacement)`` pairs for the keys.

        Returns:
            the checkpoint dict.

        Raises:
            CheckpointError: naming the file: empty, truncated, refused by
                weights-only loading, no tensors, NaN / Inf values (unless
                ``allow_nonfinite_weights``), tensors of another shape.
        """
        checkpoint = self._read_checkpoint(filename, map_location)
        self._load_state(checkpoint, filename, strict, revise_keys)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint

    @staticmethod
    def _revise(key: str, revise_keys) -> str:
        for pattern, repl in revise_keys:
            key = re.sub(pattern, repl, key)
        return key

    def load_or_resume(self) -> None:
        """Load (``load_from``) or resume (``resume=True``) as mmengine's,
        except: ``resume`` without a checkpoint in the work dir is an error
        (not a silent fresh start), and ``resume_weights_only=True`` loads
        only the weights of the checkpoint (training starts at iteration 0
        with a fresh optimizer and schedule, as ``load_from``)."""
        if self._has_loaded:
            return
        if self._resume:
            source = self._load_from or self._latest_checkpoint()
            if self.resume_weights_only:
                self.logger.warning(
                    f'resume_weights_only: loading the weights of {source} '
                    f'only; iteration, optimizer state and LR schedule start '
                    f'fresh')
                self.load_checkpoint(source)
            else:
                self.logger.info(f'resuming from {source}')
                self.resume(source)
        elif self._load_from is not None:
            self.load_checkpoint(self._load_from)
        self._has_loaded = self._has_loaded or bool(
            self._resume or self._load_from)

    def _check_resumable(self, checkpoint: dict, filename: str,
                         resume_optimizer: bool,
                         resume_param_scheduler: bool) -> None:
        """Raise :class:`CheckpointError` naming ``filename`` and what is
        missing for an exact resume."""
        meta = checkpoint.get('meta')
        hint = ('; to start a new run from its weights only, use '
                '--resume-weights-only (resume_weights_only=True) or load_from')
        if not isinstance(meta, dict) or not {'epoch', 'iter'} <= set(meta):
            raise CheckpointError(
                f'{filename} has no meta with epoch and iter: it is a weights '
                f'file, not a run checkpoint' + hint)
        missing = []
        if 'message_hub' not in checkpoint:
            missing.append('message_hub (log and hook state)')
        if resume_optimizer and 'optimizer' not in checkpoint:
            missing.append('optimizer state (AdamW moments)')
        if resume_param_scheduler and self.param_schedulers is not None:
            saved = checkpoint.get('param_schedulers')
            if saved is None:
                missing.append('param_schedulers (LR schedule position)')
            else:
                self.optim_wrapper = self.build_optim_wrapper(
                    self.optim_wrapper)
                built = self.param_schedulers = self.build_param_scheduler(
                    self.param_schedulers)
                counts = ({k: len(v) for k, v in built.items()}
                          if isinstance(built, dict) else len(built))
                got = ({k: len(v) for k, v in saved.items()}
                       if isinstance(saved, dict) else len(saved)) \
                    if isinstance(saved, (dict, list)) else None
                if got != counts:
                    raise CheckpointError(
                        f'{filename} holds {got} parameter schedulers, the '
                        f'config builds {counts}: not the same schedule')
        if missing:
            raise CheckpointError(
                f'{filename} cannot be resumed exactly: it has no '
                f'{", no ".join(missing)}' + hint)

    def resume(self, filename: str, resume_optimizer: bool = True,
               resume_param_scheduler: bool = True,
               map_location='default') -> None:
        """Resume a run: weights, epoch / iteration, message hub, optimizer,
        schedulers, then the random state of the checkpoint.

        Unlike mmengine's, nothing of the checkpoint is evaluated (mmengine
        builds ``meta['config']`` with ``Config.fromstring``, which runs any
        code in it): the world size is compared as a number
        (``meta['world_size']``). A checkpoint without meta, optimizer or
        scheduler state is an error naming the file (mmengine would restart
        AdamW and the LR schedule silently).
        """
        device = get_device() if map_location == 'default' else map_location
        checkpoint = self._read_checkpoint(filename, device)
        self._check_resumable(checkpoint, filename, resume_optimizer,
                              resume_param_scheduler)
        self._load_state(checkpoint, filename, False, [(r'^module\.', '')])
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        meta = checkpoint['meta']
        self.train_loop._epoch = meta['epoch']
        self.train_loop._iter = meta['iter']
        saved_world = meta.get('world_size')
        if saved_world is not None and saved_world != self._world_size:
            self.logger.warning(
                f'{filename} was written by a run of {saved_world} process(es)'
                f', this one has {self._world_size}: the batch per iteration '
                f'and the data position per rank differ')
        resumed_seed = meta.get('seed')
        current_seed = self._randomness_cfg.get('seed')
        if resumed_seed is not None and resumed_seed != current_seed:
            if current_seed is not None:
                self.logger.warning(
                    f'seed of the checkpoint {resumed_seed} differs from the '
                    f'config\'s {current_seed}; the checkpoint\'s is used')
            self._randomness_cfg.update(seed=resumed_seed)
            self.set_randomness(**self._randomness_cfg)
        self.message_hub.load_state_dict(checkpoint['message_hub'])
        if resume_optimizer:
            self.optim_wrapper = self.build_optim_wrapper(self.optim_wrapper)
            self.optim_wrapper.load_state_dict(checkpoint['optimizer'])
        if resume_param_scheduler and self.param_schedulers is not None:
            self.param_schedulers = self.build_param_scheduler(
                self.param_schedulers)
            saved = checkpoint['param_schedulers']
            pairs = ([(s, c) for k in self.param_schedulers
                      for s, c in zip(self.param_schedulers[k], saved[k])]
                     if isinstance(self.param_schedulers, dict)
                     else zip(self.param_schedulers, saved))
            for scheduler, state in pairs:
                scheduler.load_state_dict(state)
        self._has_loaded = True
        self.logger.info(f'resumed epoch: {self.epoch}, iter: {self.iter}')
        rng_state = meta.get('rng_state')
        if rng_state is not None:
            set_rng_state(rng_state)
            self.logger.info(f'resume: random state of iteration {self.iter} '
                             f'restored')
        else:
            self.logger.warning(f'{filename} has no rng_state: random draws '
                                f'after the resume differ from an '
                                f'uninterrupted run')

    # ----------------------------------------------------------- saving
    def save_checkpoint(self, out_dir: str, filename: str,
                        file_client_args=None, save_optimizer: bool = True,
                        save_param_scheduler: bool = True, meta=None,
                        by_epoch: bool = True, backend_args=None):
        """mmengine's ``save_checkpoint`` (same arguments) with
        ``meta['rng_state']`` and ``meta['world_size']``, plain types only,
        and, for a local ``out_dir``, written to ``<filename>.tmp-<pid>``,
        fsynced and renamed into place (:func:`fsync_replace`); a failed
        save removes its temporary file."""
        meta = dict(meta or {}, rng_state=get_rng_state(),
                    world_size=self._world_size)
        local = (file_client_args is None and backend_args is None
                 and '://' not in str(out_dir))
        target = f'{filename}.tmp-{os.getpid()}' if local else filename
        try:
            super().save_checkpoint(out_dir, target, file_client_args,
                                    save_optimizer, save_param_scheduler,
                                    meta, by_epoch, backend_args)
            if local and is_main_process():
                fsync_replace(osp.join(out_dir, target),
                              osp.join(out_dir, filename))
        except BaseException:
            tmp = osp.join(out_dir, target)
            if local and osp.isfile(tmp):
                os.remove(tmp)
            raise

    def register_hook(self, hook, priority=None) -> None:
        """Register a hook; mmengine's ``CheckpointHook`` given as a config
        dict is built as :class:`Sa2VACheckpointHook` (same arguments; saves
        before deleting old checkpoints)."""
        if isinstance(hook, dict):
            hook_type = hook.get('type')
            name = hook_type.split('.')[-1] if isinstance(hook_type, str) \
                else getattr(hook_type, '__name__', None)
            if name == 'CheckpointHook' and hook_type is not \
                    Sa2VACheckpointHook:
                hook = dict(hook, type=Sa2VACheckpointHook)
        super().register_hook(hook, priority)



class Sa2VAFlexibleRunner(_CheckpointRules, FlexibleRunner):
    """mmengine's ``FlexibleRunner`` (DeepSpeed / FSDP strategies,
    ``tools/train.py --strategy``) whose resume evaluates nothing of the
    checkpoint: mmengine's builds ``meta['config']`` with
    ``Config.fromstring``. Saved checkpoints are made weights-only loadable
    as in ``Sa2VARunner`` (local loads go through the weights-only loader,
    ``engine.checkpoint.install_weights_only_loader``)."""

    def load_or_resume(self) -> None:
        """mmengine's, except that ``resume=True`` without a checkpoint in
        the work dir is an error (mmengine starts a new run silently)."""
        if not self._has_loaded and self._resume is True \
                and self._load_from is None:
            self._load_from = self._latest_checkpoint()
        super().load_or_resume()

    def resume(self, filename: str, resume_optimizer: bool = True,
               resume_param_scheduler: bool = True,
               map_location='default') -> None:
        """The strategy's resume (weights, optimizer, schedulers), then
        epoch / iteration and message hub; a checkpoint without meta is an
        error naming the file."""
        checkpoint = self.strategy.resume(
            filename, resume_optimizer=resume_optimizer,
            resume_param_scheduler=resume_param_scheduler,
            map_location=map_location,
            callback=lambda ckpt: self.call_hook('after_load_checkpoint',
                                                 checkpoint=ckpt))
        meta = checkpoint.get('meta')
        if not isinstance(meta, dict) or not {'epoch', 'iter'} <= set(meta) \
                or 'message_hub' not in checkpoint:
            raise CheckpointError(f'{filename} has no meta with epoch and '
                                  f'iter or no message_hub: not a run '
                                  f'checkpoint that can be resumed')
        self.train_loop._epoch = meta['epoch']
        self.train_loop._iter = meta['iter']
        self.message_hub.load_state_dict(
            from_weights_only(checkpoint['message_hub']))
        self.logger.info(f'resumed epoch: {self.epoch}, iter: {self.iter}')
