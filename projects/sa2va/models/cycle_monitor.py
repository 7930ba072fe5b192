"""What the mask <-> caption cycle reports besides its losses: teacher
statistics over all ranks and gradient norms of the caption path
(``mask-caption-cycle.md`` 5)."""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import Tensor, nn


def all_reduce_sum(t: Tensor) -> Tensor:
    """``t`` summed over ranks (``t`` itself when not distributed)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t)
    return t


def teacher_stats(teacher: Dict[str, Tensor], t_max: int, chosen: Tensor
                  ) -> Dict[str, Tensor]:
    """Statistics of one batch of teacher captions, summed over all ranks
    (every rank must call it in the same step: loop-1 batches come at the
    same steps on every rank).

    Args:
        teacher: :meth:`generate_pseudo_captions` output (``lengths (B,)``,
            ``stopped (B,) bool``, ``counts (B,)``).
        t_max: T, the caption slots per sample.
        chosen: ``(B, T) bool``, the corrupted positions.

    Returns:
        0-d float tensors: ``cap_len`` (mean caption tokens), ``cap_eos_rate``
        (share stopped by the end string / EOS), ``cap_eos_pos`` (mean
        position of that stop over the stopped captions; 0 if none),
        ``cap_non_pad_frac`` (caption tokens / (B T)), ``k0_rate`` (empty
        region prompts), ``corrupt_rate`` (corrupted / caption tokens).
    """
    lengths = teacher['lengths'].double()
    stopped = teacher['stopped'].double()
    v = torch.stack([lengths.new_tensor(float(lengths.numel())), lengths.sum(), stopped.sum(),
                     (lengths * stopped).sum(), (teacher['counts'] == 0).double().sum(),
                     chosen.double().sum()])
    n, total, n_stop, stop_pos, k0, n_chosen = all_reduce_sum(v).tolist()
    values = dict(cap_len=total / n, cap_eos_rate=n_stop / n,
                  cap_eos_pos=stop_pos / max(n_stop, 1.0),
                  cap_non_pad_frac=total / (n * t_max), k0_rate=k0 / n,
                  corrupt_rate=n_chosen / max(total, 1.0))
    return {k: torch.tensor(v, dtype=torch.float32, device=lengths.device)
            for k, v in values.items()}


class GradProbe:
    """L2 norms of the gradients one backward sends to the caption path.

    While started (:meth:`start`, e.g. by ``CycleEMAHook`` on logged
    iterations), tensor hooks add the squared gradient of every parameter
    of a group (``groups``: name -> substring of the parameter name) and of
    every tensor given to :meth:`watch` (the loop-1 Gumbel ``text_embeds``);
    :meth:`stop` removes the hooks and returns ``{'grad_<kind>_<name>':
    norm}`` (``kind`` = the step's ``loop1`` / ``ref``, set by the model).
    Norms are this rank's, before DDP averages them. The parameter groups
    are left out in the dual loop (two gradients go through the same
    parameters; ``GradSurgeryOptimWrapper`` logs g1 / g2 per group).
    """

    def __init__(self, model: nn.Module, groups: Dict[str, str]):
        self.model = model
        self.groups = dict(groups)
        self.kind = 'loop1'
        self._handles: List = []
        self._sq: Optional[Dict[str, Tensor]] = None

    @property
    def active(self) -> bool:
        return self._sq is not None

    def _add(self, name: str):
        def hook(grad: Tensor):
            if self._sq is not None:
                key = f'grad_{self.kind}_{name}'
                sq = grad.detach().float().pow(2).sum()
                self._sq[key] = self._sq[key] + sq if key in self._sq else sq
        return hook

    def start(self, params: bool = True) -> None:
        """Record the next backward(s); ``params=False``: watched tensors
        only."""
        self.stop()
        self._sq = {}
        if not params:
            return
        for n, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            group = next((g for g, sub in self.groups.items() if sub in n), None)
            if group is not None:
                self._handles.append(p.register_hook(self._add(group)))

    def watch(self, name: str, tensor: Tensor) -> None:
        """Record ``tensor``'s gradient under ``name`` (when started)."""
        if self.active and tensor.requires_grad:
            self._handles.append(tensor.register_hook(self._add(name)))

    def stop(self) -> Dict[str, float]:
        """Remove the hooks; the recorded norms (empty when not started)."""
        for h in self._handles:
            h.remove()
        self._handles = []
        sq, self._sq = self._sq or {}, None
        return {k: float(v) ** 0.5 for k, v in sq.items()}
