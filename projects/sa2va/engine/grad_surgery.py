"""Gradient surgery of the dual loop: the combination rule of the loop-1 and
loop-2 gradients and the optimizer wrapper that applies it
(``mask-caption-cycle.md`` 4.2)."""
from __future__ import annotations

import contextlib
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.optim import OptimWrapper
from torch import Tensor, nn

from ..registry import OPTIM_WRAPPERS


MISSING_RULES = ('skip', 'zero')


def combine_gradients(g1: Sequence[Optional[Tensor]], g2: Sequence[Optional[Tensor]],
                      rule: str = 'owner', beta: float = 0.5, missing: str = 'skip'
                      ) -> Tuple[List[Optional[Tensor]], Dict[str, float]]:
    """Combine the loop-1 and loop-2 gradients of the same parameters.

    The scalars ``dot = <g1, g2>``, ``|g1|^2``, ``|g2|^2`` are sums over
    parameters: with ``missing='skip'`` (the owner's code) over the
    parameters that have both gradients only; with ``'zero'`` over every
    parameter, a missing gradient counting as zeros (so parameters only loop
    1 reaches enlarge ``|g1|^2`` and shrink ``c``). ``c = dot / |g1|^2`` (0
    when ``|g1| = 0``). ``rule='owner'``: ``g = g1 + beta * (g2 - c g1)``
    always (the owner's v2: loop 2 projected orthogonal to loop 1 even when
    they agree); ``'pcgrad'``: the projection only when ``dot < 0``;
    ``'sum'``: ``g = g1 + beta * g2``. A parameter with one gradient gets
    ``g1`` (``'skip'``; ``g1 (1 - beta c)`` with ``'zero'``) or ``beta g2``.

    Args:
        g1, g2: one entry per parameter, float tensors of the parameter's
            shape or None (no gradient from that loss).
        rule: 'owner', 'pcgrad' or 'sum'.
        beta: weight of the (projected) loop-2 gradient.
        missing: 'skip' or 'zero', see above.

    Returns:
        (``g`` list (None where both are None), stats ``{'dot', 'cos',
        'c'}`` as floats, ``c`` the projection coefficient applied).
    """
    if rule not in ('owner', 'pcgrad', 'sum'):
        raise ValueError(f"rule must be 'owner', 'pcgrad' or 'sum', got {rule!r}")
    if missing not in MISSING_RULES:
        raise ValueError(f'missing must be one of {MISSING_RULES}, got {missing!r}')
    if len(g1) != len(g2):
        raise ValueError(f'{len(g1)} loop-1 gradients vs {len(g2)} loop-2 gradients')
    pairs = [(a, b) for a, b in zip(g1, g2) if a is not None or b is not None]
    if not pairs:
        return [None] * len(g1), dict(dot=0.0, cos=0.0, c=0.0)
    ref = next(a if a is not None else b for a, b in pairs)
    zero = ref.new_zeros((), dtype=torch.float64)
    dot, n1, n2 = zero.clone(), zero.clone(), zero.clone()
    for a, b in pairs:
        if missing == 'skip' and (a is None or b is None):
            continue
        if a is not None:
            n1 += a.double().pow(2).sum()
        if b is not None:
            n2 += b.double().pow(2).sum()
        if a is not None and b is not None:
            dot += (a.double() * b.double()).sum()
    c = float(dot / n1) if float(n1) > 0 else 0.0
    if rule == 'sum' or (rule == 'pcgrad' and float(dot) >= 0):
        c = 0.0
    out: List[Optional[Tensor]] = []
    for a, b in zip(g1, g2):
        if a is None and b is None:
            out.append(None)
        elif b is None and missing == 'skip':
            out.append(a.clone())
        elif a is None:
            out.append(beta * b)
        else:
            g = a.clone() * (1.0 - beta * c)
            out.append(g if b is None else g + beta * b)
    denom = float((n1 * n2).sqrt())
    return out, dict(dot=float(dot), cos=float(dot) / denom if denom > 0 else 0.0, c=c)


@OPTIM_WRAPPERS.register_module()
class GradSurgeryOptimWrapper(OptimWrapper):
    """The dual loop's optimizer wrapper: ``update_params((L1, L2))``.

    Per micro-step: ``g1 = dL1/dθ`` and ``g2 = dL2/dθ`` by two
    ``torch.autograd.grad`` calls over the trainable parameters of the
    optimizer (the model's forward ran under ``no_sync``, so DDP does not
    reduce), each averaged over ranks by one ``all_reduce`` of the flattened
    gradients; :func:`combine_gradients` (``rule``, ``beta``) on those
    all-reduced gradients (identical on every rank); the result, divided by
    the accumulation factor, is added to ``.grad``. On an update step:
    clip (``clip_grad``), optimizer step, zero. Logs ``train/dual_cos``,
    ``train/dual_dot``, ``train/dual_c`` and, per parameter group of
    ``norm_groups``, ``train/dual_g1_<group>`` / ``train/dual_g2_<group>``
    (L2 norms of the all-reduced, accumulation-scaled gradients).

    Args (besides :class:`mmengine.optim.OptimWrapper`'s):
        rule: 'owner' (always project, v2), 'pcgrad' or 'sum'.
        beta: weight of the loop-2 gradient (0.5).
        missing: 'skip' (owner: the scalars over parameters both losses
            reach, on any rank) or 'zero' (a missing gradient counts as
            zeros), see :func:`combine_gradients`.
        amp_dtype: None (no autocast) or 'bfloat16' / 'float16': the forward
            runs under ``torch.autocast`` on the model's device type (the
            role of ``AmpOptimWrapper(dtype=...)``; no loss scaling, so
            use bfloat16).
        norm_groups: ``{group: substring}``; a parameter whose name holds
            the substring belongs to the group (first match). Default: LoRA,
            projector (mlp1), SAM2, text_hidden_fcs, as the owner logs.
    """

    NORM_GROUPS = dict(lora='lora_', projector='mlp1', sam2='grounding_encoder',
                       fcs='text_hidden_fcs')

    def __init__(self, *args, rule: str = 'owner', beta: float = 0.5,
                 missing: str = 'skip', amp_dtype: Optional[str] = None,
                 norm_groups: Optional[dict] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm_groups = dict(self.NORM_GROUPS if norm_groups is None else norm_groups)
        self._param_group: Dict[int, Optional[str]] = {}
        combine_gradients([], [], rule, beta, missing)        # validates the rules
        self.rule, self.beta, self.missing = rule, float(beta), missing
        if amp_dtype not in (None, 'bfloat16', 'float16'):
            raise ValueError(f"amp_dtype must be None, 'bfloat16' or 'float16', got {amp_dtype!r}")
        self.amp_dtype = getattr(torch, amp_dtype) if amp_dtype else None

    @contextlib.contextmanager
    def optim_context(self, model: nn.Module):
        """DDP never reduces by itself here (the wrapper all-reduces);
        autocast to ``amp_dtype`` when set."""
        if not self._param_group:
            for name, p in model.named_parameters():
                self._param_group[id(p)] = next(
                    (g for g, sub in self.norm_groups.items() if sub in name), None)
        with contextlib.ExitStack() as stack:
            if hasattr(model, 'no_sync'):
                stack.enter_context(model.no_sync())
            if self.amp_dtype is not None:
                device = next(model.parameters()).device.type
                stack.enter_context(torch.autocast(device_type=device, dtype=self.amp_dtype))
            yield

    @staticmethod
    def _all_reduce_mean(grads: List[Tensor]) -> List[Tensor]:
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return grads
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= dist.get_world_size()
        out, i = [], 0
        for g in grads:
            out.append(flat[i:i + g.numel()].view_as(g))
            i += g.numel()
        return out

    @staticmethod
    def _all_reduce_max(t: Tensor) -> Tensor:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            t = t.clone()
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t

    def update_params(self, loss, step_kwargs: Optional[Dict] = None,
                      zero_kwargs: Optional[Dict] = None) -> None:
        if not (isinstance(loss, (tuple, list)) and len(loss) == 2):
            raise TypeError('GradSurgeryOptimWrapper.update_params needs (loop-1 loss, loop-2 '
                            'loss): use it with MaskCaptionCycleModel(dual_loop=...)')
        params = [p for group in self.optimizer.param_groups for p in group['params']
                  if p.requires_grad]
        grads = []
        for i, part in enumerate(loss):
            got = torch.autograd.grad(self.scale_loss(part), params, allow_unused=True,
                                      retain_graph=i == 0)
            # which parameters this loss reaches on any rank (the same rule
            # everywhere), then the averaged gradients; None where no rank has one
            reached = self._all_reduce_max(torch.tensor(
                [g is not None for g in got], dtype=torch.float32, device=params[0].device))
            got = self._all_reduce_mean(
                [torch.zeros_like(p) if g is None else g for p, g in zip(params, got)])
            grads.append([g if r > 0 else None for g, r in zip(got, reached.tolist())])
        combined, stats = combine_gradients(grads[0], grads[1], self.rule, self.beta,
                                            self.missing)
        for i, gs in enumerate(grads):
            sq: Dict[str, float] = {}
            for p, g in zip(params, gs):
                group = self._param_group.get(id(p))
                if group is not None and g is not None:
                    sq[group] = sq.get(group, 0.0) + float(g.double().pow(2).sum())
            for group, v in sq.items():
                stats[f'g{i + 1}_{group}'] = v ** 0.5
        for p, g in zip(params, combined):
            if g is not None:
                p.grad = g.to(p.dtype) if p.grad is None else p.grad + g.to(p.dtype)
        for k, v in stats.items():
            self.message_hub.update_scalar(f'train/dual_{k}', v)
        self._inner_count += 1
        if self.should_update():
            self.step(**(step_kwargs or {}))
            self.zero_grad(**(zero_kwargs or {}))
