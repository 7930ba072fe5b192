"""In-training RefCOCO evaluation of the mask <-> caption cycle
(``mask-caption-cycle.md`` 10.1): cIoU / gIoU and the share of expressions
answered without ``[SEG]``, every K iterations, on N fixed samples, with the
training tile setting; the evaluated checkpoints are kept, training can stop
below a threshold, and the owner's weight-mix variants can be evaluated.
"""
from __future__ import annotations

import contextlib
import json
import os
import os.path as osp
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_dist_info, is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ..registry import DATASETS, HOOKS

#: the owner's weight mixes (section 10.1): parameters whose name holds one
#: of the substrings keep their trained values, every other trainable
#: parameter is reset to its value at the start of training
VARIANTS = {
    'full': None,
    'lora_only': ('lora_',),
    'sam2_text': ('grounding_encoder.', 'text_hidden_fcs.'),
    'lora_sam2_text': ('lora_', 'grounding_encoder.', 'text_hidden_fcs.'),
    'proj_only': ('mlp1',),
}

#: the owner's eval question (Sa2VA's referring question)
EVAL_QUESTION = 'Please segment {class_name} in this image.'


def kept_checkpoint_paths(runner) -> List[str]:
    """The checkpoint files :class:`CycleRefCOCOEvalHook` has kept (the
    message-hub info ``'protected_checkpoints'``): a checkpoint hook that
    prunes old checkpoints should leave these alone."""
    return list(runner.message_hub.get_info('protected_checkpoints') or [])


@HOOKS.register_module()
class CycleRefCOCOEvalHook(Hook):
    """Evaluate referring segmentation on RefCOCO val during training.

    Every ``interval`` iterations (and after the last one): the student
    answers ``question`` about each of ``num_samples`` fixed (image,
    expression) pairs with greedy generation through
    :class:`~projects.sa2va.evaluation.predictor.Sa2VAPredictor` (the
    model's chat template, ``max_num_tiles`` tiles: 1 = the training
    setting, one 448 tile, no thumbnail); the first ``[SEG]``'s mask at the
    image size against the GT; cIoU / gIoU by
    :func:`~projects.sa2va.evaluation.metrics.refseg_ciou_giou` (an answer
    without ``[SEG]`` counts as an empty mask: 0 in gIoU, nothing in cIoU).
    Samples are spread over the ranks and the counts gathered, so every rank
    computes the same figures.

    Per evaluation and variant it writes ``eval/<variant>_cIoU``,
    ``eval/<variant>_gIoU``, ``eval/<variant>_no_seg_frac`` to the
    visualizer (step = iteration), a log line, and one JSON line to
    ``<work_dir>/eval.log`` (``step``, ``variant``, ``cIoU``, ``gIoU``,
    ``no_seg``, ``total``, ``no_seg_frac``, ``time_sec``, ``checkpoint``).

    Kept checkpoints: the weights evaluated at iteration N are kept as
    ``<work_dir>/eval_checkpoints/iter_N.pth``: a hard link (or copy) of the
    checkpoint hook's ``iter_N.pth`` when one was saved this iteration (this
    hook runs after it), else a checkpoint saved by this hook (model only).
    ``max_keep_ckpts`` then deletes only the checkpoint hook's name, not the
    kept file; the kept paths are also published as the message-hub info
    ``'protected_checkpoints'`` (:func:`kept_checkpoint_paths`).

    Args:
        dataset: a RefCOCO dataset config giving ``image`` (PIL),
            ``masks (1, H, W)`` and ``caption`` per sample (e.g.
            ``RefCOCOCaptionDataset`` with split ``'val'`` and the pipeline
            ``[LoadImage, DecodeMasks]``).
        interval: evaluate every this many iterations (0: only at the end).
        num_samples: expressions evaluated (spread evenly over the dataset;
            None = all).
        question: ``{class_name}`` template of the question.
        max_new_tokens: generation limit of the answer.
        max_num_tiles: image tiles of the prompt (1 = training setting).
        variants: names of :data:`VARIANTS` to evaluate (``'full'`` = the
            current weights; the first one drives ``stop_below``).
        stop_below: stop training when the first variant's cIoU is below
            this (None = never).
        keep_checkpoints: keep the evaluated checkpoints (see above).
        amp_dtype: None or ``'bfloat16'`` / ``'float16'``: generate under
            autocast on the model's device (fp32 trainables + bf16 frozen
            weights need it, as training does).
    """

    priority = 'LOWEST'    # after the checkpoint hook has saved this iteration

    def __init__(self, dataset: dict, interval: int = 500,
                 num_samples: Optional[int] = 100, question: str = EVAL_QUESTION,
                 max_new_tokens: int = 32, max_num_tiles: int = 1,
                 variants: Sequence[str] = ('full',), stop_below: Optional[float] = None,
                 keep_checkpoints: bool = True, amp_dtype: Optional[str] = None):
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown or not variants:
            raise ValueError(f'variants must be names of {sorted(VARIANTS)}, got {variants}')
        if question.count('{class_name}') != 1:
            raise ValueError(f'question {question!r} needs exactly one {{class_name}}')
        if amp_dtype not in (None, 'bfloat16', 'float16'):
            raise ValueError(f"amp_dtype must be None, 'bfloat16' or 'float16', got {amp_dtype!r}")
        self.dataset_cfg = dataset
        self.interval = int(interval)
        self.num_samples = num_samples
        self.question = question
        self.max_new_tokens = int(max_new_tokens)
        self.max_num_tiles = int(max_num_tiles)
        self.variants = tuple(variants)
        self.stop_below = stop_below
        self.keep_checkpoints = keep_checkpoints
        self.amp_dtype = getattr(torch, amp_dtype) if amp_dtype else None
        self._start: Dict[str, torch.Tensor] = {}
        self.history: List[dict] = []

    # ------------------------------------------------------------ set-up
    @staticmethod
    def _model(runner):
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def before_train(self, runner) -> None:
        from mmengine.registry import DefaultScope
        with DefaultScope.overwrite_default_scope('sa2va'):
            self.dataset = DATASETS.build(self.dataset_cfg)
        n = len(self.dataset)
        if n == 0:
            raise ValueError('CycleRefCOCOEvalHook: the eval dataset is empty')
        count = n if self.num_samples is None else min(int(self.num_samples), n)
        self.indices = np.unique(np.linspace(0, n - 1, count).round().astype(int)).tolist()
        if any(v != 'full' for v in self.variants):
            self._start = {name: p.detach().to('cpu', copy=True)
                           for name, p in self._model(runner).named_parameters()
                           if p.requires_grad}

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        last = runner.iter + 1 == runner.max_iters
        if (self.interval > 0 and self.every_n_train_iters(runner, self.interval)) or last:
            self.evaluate(runner)

    # -------------------------------------------------------- evaluation
    def _sample(self, i: int) -> dict:
        item = self.dataset[i]
        masks = item['masks']
        gt = np.asarray(masks[0] if masks.ndim == 3 else masks) != 0
        return dict(image=item['image'], caption=item['caption'], gt=gt)

    def _counts(self, model) -> List[Optional[tuple]]:
        """(intersection, union) or None (no [SEG]) for this rank's share of
        the samples, in index order."""
        from ..evaluation.metrics import mask_inter_union
        from ..evaluation.predictor import Sa2VAPredictor
        rank, world = get_dist_info()
        predictor = Sa2VAPredictor(model, template=model.encoder.template,
                                   max_num_tiles=self.max_num_tiles)
        device = next(model.parameters()).device
        autocast = (torch.autocast(device_type=device.type, dtype=self.amp_dtype)
                    if self.amp_dtype is not None else contextlib.nullcontext())
        out = []
        with torch.no_grad(), autocast:
            for i in self.indices[rank::world]:
                s = self._sample(i)
                pred = predictor.segment(s['image'], self.question.replace(
                    '{class_name}', s['caption']), max_new_tokens=self.max_new_tokens)
                masks = pred['masks']
                out.append(None if masks.shape[0] == 0
                           else mask_inter_union(masks[0].numpy(), s['gt']))
        return out

    @contextlib.contextmanager
    def _variant(self, model, name: str):
        keep = VARIANTS[name]
        if keep is None:
            yield
            return
        backup = {}
        params = dict(model.named_parameters())
        try:
            with torch.no_grad():
                for n, start in self._start.items():
                    if not any(k in n for k in keep):
                        backup[n] = params[n].detach().clone()
                        params[n].copy_(start.to(params[n].device, params[n].dtype))
            yield
        finally:
            with torch.no_grad():
                for n, value in backup.items():
                    params[n].copy_(value)

    def evaluate(self, runner) -> List[dict]:
        """Evaluate every variant now; returns their records."""
        from ..evaluation.metrics import refseg_ciou_giou
        model = self._model(runner)
        step = runner.iter + 1
        kept = self._keep_checkpoint(runner, step) if self.keep_checkpoints else None
        was_training = model.training
        records = []
        try:
            for name in self.variants:
                t0 = time.perf_counter()
                with self._variant(model, name):
                    mine = self._counts(model)
                counts = [c for part in all_gather_object(mine) for c in part]
                metrics = refseg_ciou_giou(counts)
                no_seg = sum(c is None for c in counts)
                rec = dict(step=step, variant=name, cIoU=metrics['cIoU'],
                           gIoU=metrics['gIoU'], no_seg=no_seg, total=len(counts),
                           no_seg_frac=no_seg / len(counts),
                           time_sec=round(time.perf_counter() - t0, 3), checkpoint=kept)
                records.append(rec)
        finally:
            model.train(was_training)
        self.history += records
        for rec in records:
            runner.logger.info(
                f'RefCOCO eval iter {step} [{rec["variant"]}]: cIoU {rec["cIoU"]:.4f} '
                f'gIoU {rec["gIoU"]:.4f} no [SEG] {rec["no_seg"]}/{rec["total"]}')
            runner.visualizer.add_scalars(
                {f'eval/{rec["variant"]}_{k}': rec[k] for k in ('cIoU', 'gIoU', 'no_seg_frac')},
                step=step)
            if is_main_process():
                with open(osp.join(runner.work_dir, 'eval.log'), 'a') as f:
                    f.write(json.dumps(rec) + '\n')
        first = records[0]
        if self.stop_below is not None and first['cIoU'] < self.stop_below:
            runner.logger.warning(f'RefCOCO cIoU {first["cIoU"]:.4f} < stop_below '
                                  f'{self.stop_below}: stopping training')
            runner.train_loop.stop_training = True
        return records

    # -------------------------------------------------------- checkpoints
    def _keep_checkpoint(self, runner, step: int) -> str:
        """Keep the weights of iteration ``step``; returns the kept path."""
        out_dir = osp.join(runner.work_dir, 'eval_checkpoints')
        name = f'iter_{step}.pth'
        kept = osp.join(out_dir, name)
        last = runner.message_hub.get_info('last_ckpt')
        if last and osp.basename(str(last)) == name and osp.isfile(str(last)):
            if is_main_process():
                os.makedirs(out_dir, exist_ok=True)
                if not osp.exists(kept):
                    try:
                        os.link(last, kept)
                    except OSError:                 # another file system
                        import shutil
                        shutil.copyfile(last, kept)
        else:
            runner.save_checkpoint(out_dir, name, save_optimizer=False,
                                   save_param_scheduler=False)
        protected = kept_checkpoint_paths(runner)
        if kept not in protected:
            runner.message_hub.update_info('protected_checkpoints', protected + [kept])
        return kept
