"""The EMA teacher of the mask <-> caption cycle: the fp32 shadow of the
trainable mllm weights, the swap that makes the student the teacher, and the
teacher's greedy pseudo captions (left-padded, KV-cached, stopped at the
template's end string)."""
from __future__ import annotations

import contextlib
from typing import Dict, List, Optional, Tuple

import torch
from mmengine.logging import print_log
from torch import Tensor, nn


def global_max(n: int, device) -> int:
    """``n`` all-reduced with MAX over ranks (``n`` when not distributed)."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return int(n)
    t = torch.tensor([int(n)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def pad_rows(rows: List[List[int]], pad_id: int, length: int, left: bool,
             device) -> Tuple[Tensor, Tensor]:
    """``(ids (B, length) long, attention (B, length) long)``."""
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    att = torch.zeros((len(rows), length), dtype=torch.long)
    for i, r in enumerate(rows):
        if left:
            ids[i, length - len(r):] = torch.tensor(r, dtype=torch.long)
            att[i, length - len(r):] = 1
        else:
            ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
            att[i, :len(r)] = 1
    return ids.to(device), att.to(device)


def positions(att: Tensor) -> Tensor:
    """Position ids ``(B, L)``: 0.. over real tokens (left or right pad)."""
    return (att.cumsum(1) - 1).clamp(min=0)


class CaptionEnd:
    """Where a generated caption ends: the chat template's end string
    (phi3 ``<|end|>``, ChatML ``<|im_end|>``) in the decoded text.

    A byte-level BPE vocabulary need not hold the end string as one token:
    Qwen2.5's (InternVL2.5-4B) spells ``<|end|>`` as ``< | end | >`` and, after
    a caption ending in ``.``, fuses the first piece into ``.<``; matching the
    ids of ``encode(end)`` never fires there. So the end is looked for in the
    decoded text, each time a token whose text holds the end string's last
    character (``closers``) is generated, and the caption is the text before
    it: the generated tokens whose text lies wholly before the end string,
    plus the encoding of the rest of that text when a token straddles the
    boundary (``'.<'`` -> ``'.'``). Tokens are kept as generated otherwise (a
    byte-level piece of a multi-byte character decodes to U+FFFD alone and
    would not survive re-encoding the text).

    Args:
        tokenizer: a HF tokenizer.
        end_text: the end string (non-empty).
        vocab_size: rows of the model's vocabulary (``>= len(tokenizer)``;
            rows past the tokenizer never close).

    Attributes:
        closers: ``(vocab_size,) bool``, True for ids whose decoded text
            contains ``end_text[-1]``.
    """

    def __init__(self, tokenizer, end_text: str, vocab_size: int):
        if not end_text:
            raise ValueError('the chat template has no SUFFIX: the teacher needs an end string')
        self.tokenizer = tokenizer
        self.end_text = end_text
        n = min(len(tokenizer), int(vocab_size))
        pieces = tokenizer.batch_decode([[i] for i in range(n)], skip_special_tokens=False)
        closers = torch.zeros(int(vocab_size), dtype=torch.bool)
        closers[:n] = torch.tensor([end_text[-1] in p for p in pieces], dtype=torch.bool)
        self.closers = closers

    def caption_before_end(self, ids: List[int]) -> Optional[List[int]]:
        """The caption ids of generated ``ids`` that end with the end string
        (see above), or None when their text holds no end string."""
        decode = lambda x: self.tokenizer.decode(x, skip_special_tokens=False)  # noqa
        text = decode(ids)
        at = text.find(self.end_text)
        if at < 0:
            return None
        before = text[:at]
        j = len(ids)
        while j > 0 and not before.startswith(decode(ids[:j])):
            j -= 1
        rest = before[len(decode(ids[:j])):]
        return list(ids[:j]) + (self.tokenizer.encode(rest, add_special_tokens=False)
                                if rest else [])


class EMATeacherMixin:
    """EMA teacher and pseudo-caption generation of
    :class:`~projects.sa2va.models.cycle.MaskCaptionCycleModel` (mixed into
    it; uses its ``mllm``, ``tokenizer``, ``pad_id``, ``eos_id``,
    ``caption_end``, ``caption_len``, ``ema_decay`` and prompt / LLM
    helpers)."""

    def _init_ema(self) -> None:
        """Register the fp32 shadow buffers of the trainable mllm weights."""
        self._ema_names = [f'mllm.{n}' for n, p in self.mllm.named_parameters()
                           if p.requires_grad]
        self.ema_shadow = nn.Module()
        for name in self._ema_names:
            p = self.get_parameter(name)
            self.ema_shadow.register_buffer(self._shadow_key(name),
                                            torch.zeros(p.shape, dtype=torch.float32))
        # [initialised (0/1), number of updates]
        self.register_buffer('ema_state', torch.zeros(2, dtype=torch.long))

    @staticmethod
    def _shadow_key(name: str) -> str:
        return name.replace('.', '__')

    def _shadow(self, name: str) -> Tensor:
        return getattr(self.ema_shadow, self._shadow_key(name))

    @torch.no_grad()
    def ema_reset(self) -> None:
        """Shadow := the current student weights (fp32); counters reset."""
        for name in self._ema_names:
            self._shadow(name).copy_(self.get_parameter(name).float())
        self.ema_state.zero_()
        self.ema_state[0] = 1

    def _ensure_ema(self) -> None:
        if int(self.ema_state[0]) == 0:
            print_log('EMA teacher initialised from the current student weights',
                      logger='current')
            self.ema_reset()

    @torch.no_grad()
    def ema_update(self) -> None:
        """``shadow <- d * shadow + (1 - d) * student`` in fp32 (call after
        every optimizer step; ``CycleEMAHook`` does)."""
        self._ensure_ema()
        d = self.ema_decay
        for name in self._ema_names:
            shadow = self._shadow(name)
            if shadow.dtype != torch.float32:
                raise TypeError(f'EMA shadow {name} is {shadow.dtype}; it must stay float32 '
                                f'(do not cast the whole model)')
            shadow.mul_(d).add_(self.get_parameter(name).detach().float(), alpha=1.0 - d)
        self.ema_state[1] += 1

    @contextlib.contextmanager
    def teacher_weights(self):
        """Inside: the trainable mllm weights hold the EMA shadow (cast to
        their dtype) and mllm is in eval mode; restored exactly on exit."""
        self._ensure_ema()
        backup = {}
        was_training = self.mllm.training
        try:
            with torch.no_grad():
                for name in self._ema_names:
                    p = self.get_parameter(name)
                    backup[name] = p.detach().clone()
                    p.copy_(self._shadow(name).to(p.dtype))
            self.mllm.eval()
            yield
        finally:
            with torch.no_grad():
                for name, value in backup.items():
                    self.get_parameter(name).copy_(value)
            self.mllm.train(was_training)

    # ------------------------------------------------------- step 1: teacher
    @torch.no_grad()
    def generate_pseudo_captions(self, pixel_values1: Tensor, prompt_masks1: Tensor,
                                 max_new_tokens: Optional[int] = None
                                 ) -> Dict[str, Tensor]:
        """Greedy EMA-teacher captions of (image 1, region 1).

        Args:
            pixel_values1: ``(B, 3, 448, 448)`` normalised float.
            prompt_masks1: ``(B, 16, 16)`` bool / {0, 1}; K_i = its count
                (0 allowed: ``<vp></vp>``).
            max_new_tokens: T (default ``caption_len``).

        Returns:
            dict with ``tokens (B, T) long`` (pad id after each caption),
            ``lengths (B,) long`` (caption tokens, the end string
            excluded), ``stopped (B,) bool`` (ended by the end string or
            EOS; False = ran to T),
            ``counts (B,) long`` (K_i).

        Raises:
            ValueError: every caption of the batch is empty (all padding).
        """
        t_max = int(max_new_tokens or self.caption_len)
        counts = (prompt_masks1 != 0).flatten(1).sum(1)
        rows = [self.caption_prompt_ids(int(k)) for k in counts.tolist()]
        device = pixel_values1.device
        length = self._maybe_global(max(len(r) for r in rows), device)
        ids, att = pad_rows(rows, self.pad_id, length, left=True, device=device)
        with self.teacher_weights():
            flags, vp, pm = self._vp_inputs(pixel_values1, prompt_masks1)
            embeds = self.mllm.build_inputs_embeds(ids, pixel_values1, flags, vp, pm)
            tokens, lengths, stopped = self._greedy(embeds, att, t_max)
        if int(lengths.sum()) == 0:
            raise ValueError(f'the EMA teacher wrote an empty caption for all {len(rows)} '
                             f'samples of the batch (K = {counts.tolist()}): pseudo tokens '
                             f'are all padding')
        return dict(tokens=tokens, lengths=lengths, stopped=stopped, counts=counts)

    def _greedy(self, embeds: Tensor, att: Tensor, t_max: int
                ) -> Tuple[Tensor, Tensor, Tensor]:
        """KV-cached greedy decoding from left-padded ``embeds (B, P, D)``.

        A sample stops at EOS (the caption is the tokens before it) or when
        its decoded text holds the template's end string (the caption is
        what lies before it, :meth:`CaptionEnd.caption_before_end`, at most
        ``t_max`` tokens). Returns ``(tokens (B, t_max) long`` pad after
        each caption, ``lengths (B,)``, ``stopped (B,) bool)``."""
        from transformers import DynamicCache

        from ..compat import cache_kwargs
        body = self._llm_body()
        emb_layer = self.mllm.get_input_embeddings()
        b, device = embeds.shape[0], embeds.device
        pos = positions(att)
        cache = DynamicCache()
        out = body(inputs_embeds=embeds, attention_mask=att, position_ids=pos,
                   **cache_kwargs(body, cache), use_cache=True)
        hidden = out.last_hidden_state[:, -1]
        next_pos = pos[:, -1:] + 1
        gen = torch.full((b, t_max), self.pad_id, dtype=torch.long, device=device)
        lengths = torch.full((b,), t_max, dtype=torch.long, device=device)
        finished = torch.zeros(b, dtype=torch.bool, device=device)
        closers = self.caption_end.closers.to(device)
        cut_ids: Dict[int, List[int]] = {}
        for t in range(t_max):
            nxt = self._lm_head(hidden).argmax(-1)
            gen[:, t] = torch.where(finished, gen[:, t], nxt)
            hit_eos = ~finished & (nxt == self.eos_id)
            lengths = torch.where(hit_eos, torch.full_like(lengths, t), lengths)
            finished = finished | hit_eos
            for i in torch.nonzero(~finished & closers[nxt]).flatten().tolist():
                ids = self.caption_end.caption_before_end(gen[i, :t + 1].tolist())
                if ids is not None:
                    cut_ids[i] = ids[:t_max]
                    finished[i] = True
            if bool(finished.all()) or t == t_max - 1:
                break
            att = torch.cat([att, att.new_ones(b, 1)], 1)
            out = body(inputs_embeds=emb_layer(nxt[:, None]), attention_mask=att,
                       position_ids=next_pos, **cache_kwargs(body, cache), use_cache=True)
            hidden = out.last_hidden_state[:, -1]
            next_pos = next_pos + 1
        for i, ids in cut_ids.items():
            gen[i] = self.pad_id
            gen[i, :len(ids)] = torch.tensor(ids, dtype=torch.long, device=device)
            lengths[i] = len(ids)
        keep = torch.arange(t_max, device=device)[None] < lengths[:, None]
        return torch.where(keep, gen, torch.full_like(gen, self.pad_id)), lengths, finished
