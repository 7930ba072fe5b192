"""Loop 2 of the dual loop (``mask-caption-cycle.md`` 4): a Describe Anything
caption -> mask -> caption step, and the loss pair the gradient surgery
combines."""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor


class DualLoopMixin:
    """Loop 2 of :class:`~projects.sa2va.models.cycle.MaskCaptionCycleModel`
    (mixed into it; uses its ``dual_loop`` settings, ``tokenizer``,
    ``end_text``, :meth:`segment_with_text` and :meth:`caption_logits`).
    :class:`~projects.sa2va.engine.grad_surgery.GradSurgeryOptimWrapper`
    takes the ``(L1, L2)`` pair :meth:`parse_losses` returns."""

    #: loss keys of loop 2 (the second gradient of the dual loop)
    LOOP2_KEYS = ('loss_dam_ce', 'loss_dam_seg_llm')

    def parse_losses(self, losses: Dict[str, Tensor]):
        """mmengine's ``parse_losses``; with ``dual_loop`` the parsed loss
        is the pair ``(L1, L2)`` (L2 = the :attr:`LOOP2_KEYS` terms) for
        :class:`GradSurgeryOptimWrapper`, and ``loss_loop1`` / ``loss_loop2``
        are logged besides ``loss`` = L1 + L2."""
        total, log_vars = super().parse_losses(losses)
        if self.dual_loop is None:
            return total, log_vars
        l2 = sum(v.mean() for k, v in losses.items() if k in self.LOOP2_KEYS)
        l1 = sum(v.mean() for k, v in losses.items()
                 if 'loss' in k and k not in self.LOOP2_KEYS)
        log_vars['loss_loop1'] = l1.detach()
        log_vars['loss_loop2'] = l2.detach()
        return (l1, l2), log_vars

    def _loop2_loss(self, dam: dict) -> Dict[str, Tensor]:
        """Describe Anything loop 2 on one ``dam`` sub-batch (B2 samples with
        GT ``captions``, ``pixel_values1`` / ``g_pixel_values1`` / ``masks1``).

        GT caption (truncated to T2 tokens) -> referring question on the
        image, tokenised whole (:meth:`segment_with_text`) -> predicted mask
        (B2, h, w) and the answer CE L_segA; mask -> sigmoid -> 16 x 16
        average pool -> > threshold (no gradient) -> region prompt (K =
        cells, empty grids kept) -> teacher-forced CE of ``encode(caption +
        end string)`` (the end as the template writes it after the caption;
        no pad targets, unlike v2). Returns ``loss_dam_ce``, ``loss_dam_seg_llm``
        (weighted) and the monitor ``dam_k0_rate``."""
        cfg = self.dual_loop
        captions = dam.get('captions') or []
        if not captions or any(not isinstance(c, str) or not c for c in captions):
            raise ValueError(f'every dam sample needs a GT caption, got {captions!r}')
        texts = []
        for i, c in enumerate(captions):
            ids = self.tokenizer.encode(c, add_special_tokens=False)
            if not ids:
                raise ValueError(f'dam sample {i} has a caption with no tokens: {c!r}')
            texts.append(c if len(ids) <= cfg['caption_len'] else self.tokenizer.decode(
                ids[:cfg['caption_len']], clean_up_tokenization_spaces=False))
        device = dam['pixel_values1'].device
        seg, pred = self.segment_with_text(
            texts, dam['pixel_values1'], dam['g_pixel_values1'], dam['masks1'], 1.0)
        with torch.no_grad():
            grid = F.adaptive_avg_pool2d(pred.float().sigmoid()[:, None], (16, 16))[:, 0]
            grid = grid > cfg['grid_threshold']
        targets = [self.tokenizer.encode(t + self.end_text, add_special_tokens=False)
                   for t in texts]
        t_len = max(len(x) for x in targets)
        tokens = torch.full((len(targets), t_len), self.pad_id, dtype=torch.long)
        for i, x in enumerate(targets):
            tokens[i, :len(x)] = torch.tensor(x, dtype=torch.long)
        tokens = tokens.to(device)
        t_lengths = torch.tensor([len(x) for x in targets], device=device)
        logits = self.caption_logits(dam['pixel_values1'], grid, tokens, t_lengths)
        valid = torch.arange(t_len, device=device)[None] < t_lengths[:, None]
        ce = F.cross_entropy(logits.float(), tokens[valid])
        return {'loss_dam_ce': ce,
                'loss_dam_seg_llm': seg['loss_llm'] * cfg['seg_llm_loss_weight'],
                'dam_k0_rate': (grid.flatten(1).sum(1) == 0).float().mean()}
