"""Mask <-> caption cycle training (the owner's EMA pseudo tokens + top-k
straight-through Gumbel), as a Sa2VA model.

Loop 1 for one batch of B (image 1, region 1, image 2, mask 2) samples::

    EMA teacher (fp32 shadow of the trainable mllm weights, swapped in)
      prompt_i = template(<img>256 ctx</img>\\n There are 1 part regions ...
                 region1<vp>K_i ctx</vp>.\\n{instruction})      LEFT-padded
      greedy, KV cache, stop per sample at the template end (phi3 <|end|>,
      ChatML <|im_end|>) or EOS, at most T new tokens
      -> pseudo (B, T) long, lengths (B,) (0 <= len_i <= T; pad after)
    corruption: ratio of the N = sum(len_i) tokens -> random allowed ids
    student, teacher-forced on prompt_i + corrupted_i (right-padded)
      hidden (B, L, D) -> rows at P_i - 1 + t (t < len_i) -> lm_head
      -> caption logits (N, V)                         (only caption rows)
    top-k ST Gumbel (k, tau): weights (N, k), forward one-hot
      -> caption embeds (N, D) = sum_j w_j E[id_j], chunked over k
    referring question about image 2:
      prefix(q) + len_i caption slots + suffix(q) + answer(a, [SEG] id)
      (no post-caption slots: nothing after a caption's end is attended)
      -> hidden at [SEG] (B, D) -> text_hidden_fcs (B, C) -> SAM2 (image 2)
      -> low-res logits (B, 1, h, w) vs mask 2
    loss = 2.0 BCE + 0.5 Dice (point-sampled) + w_seg_llm * CE(answer)

A RefCOCO batch (every sample has a GT ``caption``) takes the same
question / answer path with the GT caption's token embeddings (standard
Sa2VA loss: BCE + Dice + ``ref_llm_loss_weight`` * CE).

The EMA teacher is not a second model: frozen weights are the same in
teacher and student by definition, so only the trainable parameters of
``mllm`` have an fp32 shadow (buffers ``ema_shadow.*``, saved and resumed
with the checkpoint); the teacher pass swaps the shadow in and restores the
student weights afterwards. ``CycleEMAHook`` updates the shadow after every
optimizer step.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..constants import IGNORE_INDEX, SEG_TOKEN
from ..datasets.collate import CYCLE_BATCH_KEYS, CYCLE_OPTION_A_KEYS
from ..datasets.refvos import ANSWER_LIST, SEG_QUESTIONS
from ..registry import MODELS
from ..transforms.functional import visual_prompt_text
from ..transforms.text import ConversationEncoder, image_block
from .cycle_dual import DualLoopMixin
from .cycle_monitor import GradProbe, teacher_stats
from .cycle_teacher import (CaptionEnd, EMATeacherMixin, global_max, pad_rows,
                            positions)
from .gumbel import (allowed_token_ids, corrupt_tokens, mix_embedding_rows,
                     topk_straight_through)
from .losses import resize_gt_masks
from .sa2va import Sa2VAModel

#: The owner's region-description instruction (the Describe Anything SFT
#: prompt of Sa2VA-4B).
CAPTION_INSTRUCTION = 'Please generate a detailed description for the given image region.'

_SLOT = '\x00CAPTION\x00'


@MODELS.register_module()
class MaskCaptionCycleModel(EMATeacherMixin, DualLoopMixin, Sa2VAModel):
    """Sa2VA trained by the mask -> caption -> mask cycle (loop 1) and the
    interleaved RefCOCO stream (registered as ``MaskCaptionCycleModel``).

    Args (besides :class:`Sa2VAModel`'s):
        template: chat template (name or dict, see
            ``transforms.text.get_template``); its ``SUFFIX`` is the end
            string the teacher stops at (phi3 ``<|end|>``, ChatML
            ``<|im_end|>``), found in the decoded text (:class:`CaptionEnd`).
        caption_instruction: the region-description request.
        caption_len: T, max pseudo caption tokens (owner: 256).
        topk: k of the Gumbel mix (owner: 512).
        gumbel_tau: temperature; ``tau_anneal=(start, end, steps)`` anneals
            linearly from start to end over the first ``steps`` EMA updates
            (optimizer steps); None = constant ``gumbel_tau``.
        topk_chunk: entries of k mixed per step (memory ``(N, chunk, D)``).
        corrupt_ratio: fraction of teacher tokens replaced (0.25).
        ema_decay: EMA decay per optimizer step (0.999).
        seg_llm_loss_weight: CE weight of the ``[SEG]`` answer in loop 1.
        masked_lm_loss_weight: weight of the owner's denoising CE (the
            student's caption logits at the corrupted positions vs the
            teacher's token; owner default 0 = not computed).
        ref_llm_loss_weight: CE weight of the answer on RefCOCO batches.
        seg_questions / answers: templates (``{class_name}`` / ``[SEG]``).
        template_draw: 'batch' (owner: one q / a per batch) or 'sample'.
        caption_vision_grad: mlp1 gets gradient from the captioning
            forward too (the owner computes those features without grad).
        pad_to_global_max: pad sequence lengths to the max over ranks.
        ref_caption_max_tokens: GT captions longer than this raise.
        trainable_dtype: None (parameters keep the dtype they were built in;
            the owner: everything bf16) or ``'float32'``: every trainable
            parameter (LoRA, mlp1, text_hidden_fcs, SAM2 mask decoder) is
            cast to it after loading, so AdamW updates fp32 master weights
            while the frozen LLM / ViT / SAM2 weights stay in
            ``mllm.torch_dtype`` (run the forward under bf16 autocast:
            ``AmpOptimWrapper(dtype='bfloat16')`` or the dual loop's
            ``amp_dtype``).
        dual_loop: None (loop 1 only) or a dict enabling the Describe
            Anything loop 2 on the ``dam`` sub-batch of every step:
            ``caption_len`` (T2, GT captions truncated to it; default
            ``caption_len``), ``seg_llm_loss_weight`` (w_segA, 1.0),
            ``grid_threshold`` (0.5). The two losses are combined by
            :class:`GradSurgeryOptimWrapper` (``parse_losses`` returns the
            pair), see :meth:`_loop2_loss`.
    """

    def __init__(self, *args,
                 template='phi3_chat',
                 caption_instruction: str = CAPTION_INSTRUCTION,
                 caption_len: int = 256,
                 topk: int = 512,
                 gumbel_tau: float = 0.7,
                 tau_anneal: Optional[Sequence[float]] = None,
                 topk_chunk: int = 8,
                 corrupt_ratio: float = 0.25,
                 ema_decay: float = 0.999,
                 seg_llm_loss_weight: float = 1.0,
                 masked_lm_loss_weight: float = 0.0,
                 ref_llm_loss_weight: float = 1.0,
                 seg_questions: Sequence[str] = SEG_QUESTIONS,
                 answers: Sequence[str] = ANSWER_LIST,
                 template_draw: str = 'batch',
                 caption_vision_grad: bool = True,
                 pad_to_global_max: bool = True,
                 ref_caption_max_tokens: int = 256,
                 trainable_dtype: Optional[str] = None,
                 dual_loop: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 **kwargs):
        if data_preprocessor is None:
            data_preprocessor = dict(type='MaskCaptionCycleDataPreprocessor')
        super().__init__(*args, data_preprocessor=data_preprocessor, **kwargs)
        if template_draw not in ('batch', 'sample'):
            raise ValueError(f"template_draw must be 'batch' or 'sample', got {template_draw!r}")
        if not 0 < ema_decay < 1:
            raise ValueError(f'ema_decay must be in (0, 1), got {ema_decay}')
        for q in seg_questions:
            if q.count('{class_name}') != 1:
                raise ValueError(f'question template {q!r} needs exactly one {{class_name}}')
        for a in answers:
            if a.count(SEG_TOKEN) != 1:
                raise ValueError(f'answer template {a!r} needs exactly one {SEG_TOKEN}')
        if trainable_dtype not in (None, 'float32', 'bfloat16', 'float16'):
            raise ValueError(f'trainable_dtype must be None or a float dtype name, got '
                             f'{trainable_dtype!r}')
        if trainable_dtype is not None:
            dtype = getattr(torch, trainable_dtype)
            for p in self.parameters():
                if p.requires_grad:
                    p.data = p.data.to(dtype)
        self.trainable_dtype = trainable_dtype
        self.encoder = ConversationEncoder(self.tokenizer, template)
        self.end_text = self.encoder.template.get('SUFFIX') or ''
        self.end_ids = self.encoder.encode_text(self.end_text)
        self.eos_id = self.tokenizer.eos_token_id
        self.pad_id = (self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None
                       else self.eos_id)
        self.caption_instruction = caption_instruction
        self.caption_len = int(caption_len)
        self.topk = int(topk)
        self.gumbel_tau = float(gumbel_tau)
        self.tau_anneal = tuple(tau_anneal) if tau_anneal is not None else None
        self.topk_chunk = int(topk_chunk)
        self.corrupt_ratio = float(corrupt_ratio)
        self.ema_decay = float(ema_decay)
        self.seg_llm_loss_weight = float(seg_llm_loss_weight)
        self.masked_lm_loss_weight = float(masked_lm_loss_weight)
        self.ref_llm_loss_weight = float(ref_llm_loss_weight)
        self.seg_questions = tuple(seg_questions)
        self.answers = tuple(answers)
        self.template_draw = template_draw
        self.caption_vision_grad = caption_vision_grad
        self.pad_to_global_max = pad_to_global_max
        self.ref_caption_max_tokens = int(ref_caption_max_tokens)
        self.dual_loop = None
        if dual_loop is not None:
            unknown = set(dual_loop) - {'caption_len', 'seg_llm_loss_weight', 'grid_threshold'}
            if unknown:
                raise ValueError(f'unknown dual_loop keys {sorted(unknown)}')
            self.dual_loop = dict(caption_len=int(dual_loop.get('caption_len', caption_len)),
                                  seg_llm_loss_weight=float(
                                      dual_loop.get('seg_llm_loss_weight', 1.0)),
                                  grid_threshold=float(dual_loop.get('grid_threshold', 0.5)))

        vocab = self.mllm.get_input_embeddings().weight.shape[0]
        self.caption_end = CaptionEnd(self.tokenizer, self.end_text, vocab)
        special = set(self.tokenizer.all_special_ids)
        special |= set(int(i) for i in self.tokenizer.added_tokens_decoder)
        special |= set(range(len(self.tokenizer), vocab))  # untrained padding rows
        special |= {self.seg_token_id, self.mllm.img_context_token_id, self.eos_id,
                    self.pad_id}
        if len(self.end_ids) == 1:
            # the end is one token (phi3 / ChatML in their own vocabularies);
            # spelled in ordinary pieces (phi3 in Qwen2.5: < | end | >) those
            # pieces stay allowed: they are ordinary text
            special.add(self.end_ids[0])
        self.register_buffer('special_ids', torch.tensor(sorted(special), dtype=torch.long),
                             persistent=False)
        self.register_buffer('allowed_ids', allowed_token_ids(vocab, special),
                             persistent=False)

        self._init_ema()
        self.last_pseudo_captions: List[str] = []
        self.last_student_captions: List[str] = []
        self.grad_probe = GradProbe(self, dict(lora='lora_', mlp1='mlp1'))

    def state_dict(self, *args, trainable_only: Optional[bool] = None, **kwargs):
        """As :meth:`Sa2VAModel.state_dict`, always with the EMA buffers
        (``ema_shadow.*``, ``ema_state``) so that resume restores the teacher;
        without them while :meth:`merge_and_export` runs."""
        out = super().state_dict(*args, trainable_only=trainable_only, **kwargs)
        prefix = kwargs.get('prefix', args[1] if len(args) > 1 else '')
        ema = (prefix + 'ema_shadow.', prefix + 'ema_state')
        if getattr(self, '_exporting', False):
            return type(out)((k, v) for k, v in out.items() if not k.startswith(ema))
        full = nn.Module.state_dict(self, prefix=prefix)
        for k, v in full.items():
            if k.startswith(ema):
                out[k] = v
        return out

    def merge_and_export(self, save_path: str) -> Dict[str, Tensor]:
        """:meth:`Sa2VAModel.merge_and_export` without the EMA teacher (a
        training state; the export is the student). Build the exported model
        as a plain ``Sa2VAModel`` (:meth:`export_model_cfg`)."""
        self._exporting = True
        try:
            return super().merge_and_export(save_path)
        finally:
            self._exporting = False

    #: constructor keys of this class that a plain Sa2VAModel does not take
    CYCLE_KEYS = ('template', 'caption_instruction', 'caption_len', 'topk', 'gumbel_tau',
                  'tau_anneal', 'topk_chunk', 'corrupt_ratio', 'ema_decay',
                  'seg_llm_loss_weight', 'masked_lm_loss_weight', 'ref_llm_loss_weight',
                  'seg_questions', 'answers', 'template_draw', 'caption_vision_grad',
                  'pad_to_global_max', 'ref_caption_max_tokens', 'trainable_dtype',
                  'dual_loop')

    @classmethod
    def export_model_cfg(cls, model_cfg: dict) -> dict:
        """The ``model`` config of the exported student: ``Sa2VAModel`` with
        the cycle keys removed and ``Sa2VADataPreprocessor`` (same dtypes).
        Pass it to ``evaluation.export.export_model`` (``export_from_config``,
        i.e. ``tools/export.py``, does so for a model that has this method)."""
        cfg = {k: v for k, v in dict(model_cfg).items() if k not in cls.CYCLE_KEYS}
        cfg['type'] = 'Sa2VAModel'
        pre = dict(cfg.get('data_preprocessor') or {})
        pre['type'] = 'Sa2VADataPreprocessor'
        cfg['data_preprocessor'] = pre
        return cfg

    @property
    def current_tau(self) -> float:
        """The Gumbel temperature at the current optimizer step."""
        if self.tau_anneal is None:
            return self.gumbel_tau
        start, end, steps = self.tau_anneal
        frac = min(1.0, int(self.ema_state[1]) / max(1.0, float(steps)))
        return float(start + (end - start) * frac)

    # ---------------------------------------------------------- pieces
    def _llm_body(self) -> nn.Module:
        """The decoder stack (embeddings in, last normed hidden state out)."""
        llm = self.mllm.language_model
        if hasattr(llm, 'get_base_model'):
            llm = llm.get_base_model()
        return llm.model

    def _lm_head(self, hidden: Tensor) -> Tensor:
        """``(N, D) -> (N, V)`` logits in the lm_head's dtype."""
        head = self.mllm.get_output_embeddings()
        weight = (head.weight if head is not None
                  else self.mllm.get_input_embeddings().weight)
        return F.linear(hidden.to(weight.dtype), weight,
                        getattr(head, 'bias', None) if head is not None else None)

    def _maybe_global(self, n: int, device) -> int:
        return global_max(n, device) if self.pad_to_global_max else int(n)

    def caption_prompt_ids(self, k: int) -> List[int]:
        """Ids of the region-description prompt with a ``K = k`` token
        visual prompt (one 448 tile), ending with the assistant header."""
        user = (image_block(1, self.mllm.num_image_token) + '\n'
                + visual_prompt_text([int(k)], compact=True) + self.caption_instruction)
        text = self.encoder.template['INSTRUCTION'].format(input=user, round=1)
        return list(self.encoder.bos_ids) + self.encoder.encode_text(text)

    def seg_pieces(self, question: str, answer: str) -> Tuple[List[int], List[int], List[int]]:
        """``(prefix, suffix, answer)`` ids of a referring question about one
        448 tile, split at the ``{class_name}`` slot; the answer holds the
        ``[SEG]`` id (inserted as an id) and ends with the template suffix."""
        user = (image_block(1, self.mllm.num_image_token) + '\n'
                + question.replace('{class_name}', _SLOT))
        text = self.encoder.template['INSTRUCTION'].format(input=user, round=1)
        before, after = text.split(_SLOT)
        a_pre, a_post = answer.split(SEG_TOKEN)
        a_post = a_post + (self.encoder.template.get('SUFFIX') or '')
        answer_ids = (self.encoder.encode_text(a_pre) + [self.seg_token_id]
                      + self.encoder.encode_text(a_post))
        return (list(self.encoder.bos_ids) + self.encoder.encode_text(before),
                self.encoder.encode_text(after), answer_ids)

    def _draw_templates(self, n: int) -> List[Tuple[str, str]]:
        if self.template_draw == 'batch':
            q = self.seg_questions[int(torch.randint(len(self.seg_questions), ()))]
            a = self.answers[int(torch.randint(len(self.answers), ()))]
            return [(q, a)] * n
        return [(self.seg_questions[int(torch.randint(len(self.seg_questions), ()))],
                 self.answers[int(torch.randint(len(self.answers), ()))]) for _ in range(n)]

    def _vp_inputs(self, pixel_values: Tensor, prompt_masks: Tensor):
        b = pixel_values.shape[0]
        flags = torch.ones(b, dtype=torch.long, device=pixel_values.device)
        vp = torch.ones(b, dtype=torch.bool, device=pixel_values.device)
        return flags, vp, [m[None].bool() for m in prompt_masks]

    def caption_logits(self, pixel_values1: Tensor, prompt_masks1: Tensor,
                       tokens: Tensor, lengths: Tensor) -> Tensor:
        """Teacher-forced student logits at the caption positions only.

        Args:
            pixel_values1, prompt_masks1: as :meth:`generate_pseudo_captions`.
            tokens: ``(B, T)`` long (corrupted) caption ids; lengths ``(B,)``.

        Returns:
            ``(N, V)`` logits in the lm_head dtype, N = ``lengths.sum()``,
            rows ordered by (sample, position); row (i, t) is predicted from
            the prompt and tokens ``0..t-1`` of sample i.
        """
        counts = (prompt_masks1 != 0).flatten(1).sum(1).tolist()
        lens = [int(n) for n in lengths.tolist()]
        prompts = [self.caption_prompt_ids(k) for k in counts]
        rows = [p + tokens[i, :n].tolist() for i, (p, n) in enumerate(zip(prompts, lens))]
        device = pixel_values1.device
        length = self._maybe_global(max(len(r) for r in rows), device)
        ids, att = pad_rows(rows, self.pad_id, length, left=False, device=device)
        flags, vp, pm = self._vp_inputs(pixel_values1, prompt_masks1)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.caption_vision_grad):
            vit = self.mllm.extract_feature(pixel_values1)
        embeds = self._merge(ids, vit, flags, vp, pm)
        hidden = self._llm_body()(inputs_embeds=embeds, attention_mask=att,
                                  position_ids=positions(att)).last_hidden_state
        r_idx = torch.tensor([i for i, n in enumerate(lens) for _ in range(n)],
                             dtype=torch.long, device=device)
        c_idx = torch.tensor([len(prompts[i]) - 1 + t for i, n in enumerate(lens)
                              for t in range(n)], dtype=torch.long, device=device)
        return self._lm_head(hidden[r_idx, c_idx])

    def _merge(self, ids, vit, flags, vp, pm) -> Tensor:
        from .internvl.visual_prompt import merge_vision_embeddings
        embeds = self.mllm.get_input_embeddings()(ids)
        return merge_vision_embeddings(embeds, ids, vit, flags, self.mllm.img_context_token_id,
                                       vp, pm)

    def gumbel_caption_embeds(self, logits: Tensor, noise: Optional[Tensor] = None
                              ) -> Tuple[Tensor, Tensor]:
        """``(N, V)`` logits -> ``(caption embeds (N, D), hard ids (N,))`` by
        the top-k straight-through Gumbel mix over the frozen input
        embedding (special ids excluded)."""
        weights, top_ids, hard = topk_straight_through(
            logits, self.topk, self.current_tau, self.special_ids, noise=noise)
        table = self.mllm.get_input_embeddings().weight
        return mix_embedding_rows(weights, top_ids, table, self.topk_chunk), hard

    # ------------------------------------------------ step 5: caption -> mask
    def segment_with_caption(self, caption_embeds: Tensor, lengths: Tensor,
                             pixel_values2: Tensor, g_pixel_values2: Tensor,
                             masks2: Tensor, llm_loss_weight: float
                             ) -> Tuple[Dict[str, Tensor], Tensor]:
        """Referring segmentation of image 2 with caption embeddings in the
        ``{class_name}`` slot (loop 1: the Gumbel embeddings).

        Args:
            caption_embeds: ``(N, D)``, rows by (sample, position).
            lengths: ``(B,)`` caption lengths (sum N).
            pixel_values2: ``(B, 3, 448, 448)``; g_pixel_values2 ``(B, 3, S,
                S)`` SAM2-normalised float (or uint8); masks2 ``(B, H, W)``.
            llm_loss_weight: factor of the answer CE.

        Returns:
            ``(losses {loss_mask, loss_dice, loss_llm}, pred (B, h, w)
            low-res logits)``.
        """
        lens = [int(n) for n in lengths.tolist()]
        if caption_embeds.shape[0] != sum(lens):
            raise ValueError(f'{caption_embeds.shape[0]} caption rows for lengths {lens}')
        rows, slots, answers = [], [], []
        for i, (q, a) in enumerate(self._draw_templates(len(lens))):
            pre, suf, ans = self.seg_pieces(q, a)
            rows.append(pre + [self.pad_id] * lens[i] + suf + ans)
            slots.append((len(pre), lens[i]))
            answers.append(len(ans))
        return self._segment(rows, answers, pixel_values2, g_pixel_values2, masks2,
                             llm_loss_weight, slots, caption_embeds)

    def seg_question_ids(self, question: str, answer: str, caption: str
                         ) -> Tuple[List[int], List[int]]:
        """``(question, answer)`` ids of a referring question with a text
        caption, the whole question tokenised at once as inference does
        (a byte-level BPE merges the space before the caption into its first
        word; encoding the caption alone after a prefix ending in a space
        gives a lone space token instead)."""
        user = (image_block(1, self.mllm.num_image_token) + '\n'
                + question.replace('{class_name}', caption))
        text = self.encoder.template['INSTRUCTION'].format(input=user, round=1)
        return (list(self.encoder.bos_ids) + self.encoder.encode_text(text),
                self.seg_pieces(question, answer)[2])

    def segment_with_text(self, captions: Sequence[str], pixel_values2: Tensor,
                          g_pixel_values2: Tensor, masks2: Tensor,
                          llm_loss_weight: float) -> Tuple[Dict[str, Tensor], Tensor]:
        """Referring segmentation of image 2 with text captions (RefCOCO GT
        captions, loop 2's Describe Anything captions): as
        :meth:`segment_with_caption`, the question encoded by
        :meth:`seg_question_ids`."""
        rows, answers = [], []
        for caption, (q, a) in zip(captions, self._draw_templates(len(captions))):
            question, ans = self.seg_question_ids(q, a, caption)
            rows.append(question + ans)
            answers.append(len(ans))
        return self._segment(rows, answers, pixel_values2, g_pixel_values2, masks2,
                             llm_loss_weight)

    def _segment(self, rows: List[List[int]], answers: List[int], pixel_values2: Tensor,
                 g_pixel_values2: Tensor, masks2: Tensor, llm_loss_weight: float,
                 slots: Optional[List[Tuple[int, int]]] = None,
                 caption_embeds: Optional[Tensor] = None
                 ) -> Tuple[Dict[str, Tensor], Tensor]:
        """Rows (question + answer ids, the last ``answers[i]`` supervised)
        -> LLM -> [SEG] hidden -> SAM2 on image 2; ``slots`` ((start, n) per
        row) receive ``caption_embeds`` rows in order."""
        b, device = pixel_values2.shape[0], pixel_values2.device
        length = self._maybe_global(max(len(r) for r in rows), device)
        ids, att = pad_rows(rows, self.pad_id, length, left=False, device=device)
        lab = torch.full_like(ids, IGNORE_INDEX)
        for i, (row, n_ans) in enumerate(zip(rows, answers)):
            lab[i, len(row) - n_ans:len(row)] = ids[i, len(row) - n_ans:len(row)]
        vit = self.mllm.extract_feature(pixel_values2)
        flags = torch.ones(b, dtype=torch.long, device=device)
        embeds = self._merge(ids, vit, flags, None, None)
        if slots is not None:
            slot = torch.zeros_like(att, dtype=torch.bool)
            for i, (start, n) in enumerate(slots):
                slot[i, start:start + n] = True
            embeds = embeds.masked_scatter(slot[..., None], caption_embeds.to(embeds.dtype))
        hidden = self._llm_body()(inputs_embeds=embeds, attention_mask=att,
                                  position_ids=positions(att)).last_hidden_state
        seg = ids == self.seg_token_id
        per_row = seg.sum(1).tolist()
        if per_row != [1] * b:
            raise ValueError(f'each row needs exactly one {SEG_TOKEN}, got {per_row}')
        fcs_dtype = self.text_hidden_fcs[0].weight.dtype
        prompts = self.text_hidden_fcs(hidden[seg].to(fcs_dtype))
        images = self._sam2_images(g_pixel_values2)
        pred = self._language_masks(images, prompts, torch.arange(b, device=images.device))
        gt = resize_gt_masks(masks2, self.low_res_size).to(pred.device)
        losses = self._mask_losses(pred[:, 0], gt)
        r, c = torch.nonzero(lab != IGNORE_INDEX, as_tuple=True)
        logits = self._lm_head(hidden[r, c - 1]).float()
        losses['loss_llm'] = F.cross_entropy(logits, ids[r, c]) * llm_loss_weight
        return losses, pred[:, 0]

    # --------------------------------------------------------------- forward
    def forward(self, mode: str = 'loss', captions: Optional[Sequence] = None,
                dataset_types: Optional[Sequence[str]] = None,
                data_samples=None, dam: Optional[dict] = None, **batch):
        """Loss of one cycle batch (``mode='loss'`` only).

        Args:
            captions: B entries; all None -> loop 1 (pseudo captions), all
                str -> the RefCOCO stream (GT captions). Mixed raises.
            **batch: ``pixel_values{1,2} (B, 3, 448, 448)`` float,
                ``g_pixel_values2 (B, 3, S, S)`` SAM2-normalised,
                ``prompt_masks1 (B, 16, 16) bool``, ``masks2 (B, S, S)``
                float {0, 1}, as :class:`MaskCaptionCycleDataPreprocessor`
                gives them for either route (option-A ``image{k}`` /
                ``mask{k}`` must have been derived there); the other
                ``*1`` / ``*2`` keys of the collate are accepted and unused.

        Returns:
            dict of losses (``loss_mask``, ``loss_dice``, ``loss_seg_llm`` for
            loop 1; ``loss_ref_mask``, ``loss_ref_dice``, ``loss_ref_llm`` for
            RefCOCO) and float monitors (``cap_len``, ``cap_eos_rate``,
            ``k0_rate``, ``corrupt_rate``, ``gumbel_tau``, ``ema_decay``).
        """
        if mode != 'loss':
            raise NotImplementedError(f'MaskCaptionCycleModel supports mode="loss" only, '
                                      f'got {mode!r}')
        unknown = set(batch) - set(CYCLE_BATCH_KEYS)
        if unknown:
            hint = (' (option-A keys: run the batch through '
                    'MaskCaptionCycleDataPreprocessor)' if unknown & set(CYCLE_OPTION_A_KEYS) else '')
            raise TypeError(f'unexpected batch keys {sorted(unknown)}{hint}')
        captions = list(captions or [None] * batch['pixel_values2'].shape[0])
        with_text = [c is not None for c in captions]
        if any(with_text) and not all(with_text):
            raise ValueError(f'batch mixes GT-caption samples {with_text}: RefCOCO and '
                             f'pseudo samples must come in separate batches')
        if (dam is not None) != (self.dual_loop is not None):
            raise ValueError('a `dam` sub-batch comes with dual_loop and only with it '
                             f'(dual_loop={self.dual_loop}, dam given: {dam is not None})')
        self.grad_probe.kind = 'ref' if all(with_text) else 'loop1'
        if all(with_text):
            out = self._refcoco_loss(captions, batch)
        else:
            out = self._loop1_loss(batch)[0]
        if dam is not None:
            out.update(self._loop2_loss(dam))
        return out

    def _refcoco_loss(self, captions: Sequence[str], batch: dict) -> Dict[str, Tensor]:
        ids = [self.tokenizer.encode(c, add_special_tokens=False) for c in captions]
        long = [i for i, x in enumerate(ids) if len(x) > self.ref_caption_max_tokens]
        if long:
            raise ValueError(f'GT captions of samples {long} exceed ref_caption_max_tokens '
                             f'({self.ref_caption_max_tokens})')
        if any(len(x) == 0 for x in ids):
            raise ValueError(f'empty GT caption in samples '
                             f'{[i for i, x in enumerate(ids) if not x]}')
        losses, _ = self.segment_with_text(
            captions, batch['pixel_values2'], batch['g_pixel_values2'], batch['masks2'],
            self.ref_llm_loss_weight)
        return {'loss_ref_mask': losses['loss_mask'], 'loss_ref_dice': losses['loss_dice'],
                'loss_ref_llm': losses['loss_llm']}

    def _loop1_loss(self, batch: dict, detach_caption: bool = False,
                    noise: Optional[Tensor] = None
                    ) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        """Loop 1 losses and the intermediates (``pseudo``, ``corrupted``,
        ``lengths``, ``logits (N, V)``, ``caption_embeds``, ``hard_ids``,
        ``pred``). ``detach_caption`` cuts the graph between the Gumbel
        embeddings and the segmentation forward (ablation / tests)."""
        pv1, pm1 = batch['pixel_values1'], batch['prompt_masks1']
        teacher = self.generate_pseudo_captions(pv1, pm1)
        tokens, lengths = teacher['tokens'], teacher['lengths']
        valid = torch.arange(tokens.shape[1], device=tokens.device)[None] < lengths[:, None]
        corrupted, chosen = corrupt_tokens(tokens, valid, self.corrupt_ratio,
                                           self.allowed_ids)
        logits = self.caption_logits(pv1, pm1, corrupted, lengths)
        cap_embeds, hard = self.gumbel_caption_embeds(logits, noise)
        if detach_caption:
            cap_embeds = cap_embeds.detach()
        self.grad_probe.watch('text_embeds', cap_embeds)
        losses, pred = self.segment_with_caption(
            cap_embeds, lengths, batch['pixel_values2'], batch['g_pixel_values2'],
            batch['masks2'], self.seg_llm_loss_weight)
        ref = losses['loss_mask']
        out = {'loss_mask': losses['loss_mask'], 'loss_dice': losses['loss_dice'],
               'loss_seg_llm': losses['loss_llm']}
        if self.masked_lm_loss_weight > 0:
            out['loss_masked_lm'] = self.masked_lm_loss(
                logits, tokens, corrupted, valid) * self.masked_lm_loss_weight
        out.update(teacher_stats(teacher, self.caption_len, chosen))
        out['gumbel_tau'] = ref.new_tensor(self.current_tau).detach()
        out['ema_decay'] = ref.new_tensor(self.ema_decay).detach()
        self.last_pseudo_captions = [
            self.tokenizer.decode(tokens[i, :int(n)].tolist(), skip_special_tokens=False)
            for i, n in enumerate(lengths.tolist())]
        starts = [0] + lengths.cumsum(0).tolist()
        self.last_student_captions = [
            self.tokenizer.decode(hard[starts[i]:starts[i + 1]].tolist(),
                                  skip_special_tokens=False) for i in range(len(lengths))]
        inter = dict(pseudo=tokens, corrupted=corrupted, lengths=lengths, logits=logits,
                     caption_embeds=cap_embeds, hard_ids=hard, pred=pred)
        return out, inter

    @staticmethod
    def masked_lm_loss(logits: Tensor, pseudo: Tensor, corrupted: Tensor,
                       valid: Tensor) -> Tensor:
        """The owner's denoising CE: caption logits ``(N, V)`` (rows of the
        ``valid (B, T)`` positions, in order) at the positions whose token was
        replaced (``corrupted != pseudo``) against the teacher's token; mean
        over those positions, 0 (with the graph) when there are none."""
        changed = (corrupted != pseudo)[valid]
        if not bool(changed.any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits[changed].float(), pseudo[valid][changed])
