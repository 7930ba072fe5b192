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

import contextlib
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from torch import Tensor, nn

from ..constants import IGNORE_INDEX, SEG_TOKEN
from ..datasets.collate import collate_bookkeeping, stack_same
from ..datasets.refvos import ANSWER_LIST, SEG_QUESTIONS
from ..datasets.samplers import ResumableSampler
from ..registry import DATA_SAMPLERS, FUNCTIONS, MODELS, OPTIM_WRAPPERS
from ..transforms.functional import (derive_mask_caption_batch, normalize_uint8,
                                     visual_prompt_text)
from ..transforms.text import ConversationEncoder, image_block
from .data_preprocessor import Sa2VADataPreprocessor
from .gumbel import (allowed_token_ids, corrupt_tokens, mix_embedding_rows,
                     topk_straight_through)
from .losses import resize_gt_masks
from .sa2va import Sa2VAModel
from .sam2 import normalize_sam2_images

#: The owner's region-description instruction (the Describe Anything SFT
#: prompt of Sa2VA-4B).
CAPTION_INSTRUCTION = 'Please generate a detailed description for the given image region.'

_SLOT = '\x00CAPTION\x00'
_CYCLE_KEYS = ('pixel_values1', 'pixel_values2', 'g_pixel_values1', 'g_pixel_values2',
               'prompt_masks1', 'prompt_masks2', 'masks1', 'masks2')
#: "option A" keys (``MaskCaptionOutputs(route='option_a')``): stacked by the
#: collate, turned into ``pixel_values{k}`` / ``prompt_masks{k}`` / ``masks{k}``
#: by :class:`MaskCaptionCycleDataPreprocessor`; the model never sees them.
_OPTION_A_KEYS = ('image1', 'image2', 'mask1', 'mask2')


# --------------------------------------------------------------------- batching
@FUNCTIONS.register_module()
def mask_caption_cycle_collate(instances: Sequence[dict]) -> dict:
    """Stack mask <-> caption samples into one cycle batch.

    Per sample (``MaskCaptionOutputs``), ``route='direct'``:
    ``pixel_values{1,2} (3, s, s)`` float32 normalised or uint8,
    ``g_pixel_values{1,2} (3, S, S) uint8``, ``prompt_masks{1,2} (16, 16)
    bool``, ``masks{1,2} (S, S) float32`` {0, 1}; ``route='option_a'``:
    ``image{1,2} (3, S, S) float32`` ImageNet-normalised, ``mask{1,2} (S,
    S) float32`` {0, 1} and ``g_pixel_values{1,2}`` (the preprocessor
    derives the rest); both: ``caption`` (str or None), ``dataset_type``
    (str), ``data_stats`` (dict), ``meta`` (dict).

    Returns:
        dict with every present ``*1`` / ``*2`` key (either route's)
        stacked to ``(B, ...)``,
        ``captions`` (list of B str or None), ``dataset_types`` (list),
        ``data_stats`` (counters summed), ``meta`` (list). Dual loop:
        samples whose ``dataset_type`` starts with ``dam_`` (the Describe
        Anything part, :class:`CycleInterleaveSampler` with ``dam_datasets``)
        are stacked the same way into ``batch['dam']``; the rest form the
        batch.

    Raises:
        ValueError: empty batch, a batch of Describe Anything samples only,
        a sample missing a key another sample has, or shapes / dtypes that
        differ between samples (named).

    Text is built by the model, so there is nothing to pad here (unlike
    ``sa2va_collate_fn``).
    """
    if not instances:
        raise ValueError('cannot collate an empty batch')
    dam = [s for s in instances if str(s.get('dataset_type') or '').startswith('dam_')]
    if dam:
        main = [s for s in instances if not str(s.get('dataset_type') or '').startswith('dam_')]
        if not main:
            raise ValueError(f'a batch of {len(dam)} Describe Anything samples only: the '
                             f'dual-loop loader batch must hold the step batch + the dam '
                             f'batch (batch_size = 2 x the sampler\'s)')
        batch = _stack_cycle(main)
        batch['dam'] = _stack_cycle(dam)
        return batch
    return _stack_cycle(instances)


def _stack_cycle(instances: Sequence[dict]) -> dict:
    batch: dict = {}
    for key in _CYCLE_KEYS + _OPTION_A_KEYS:
        have = [i for i, s in enumerate(instances) if s.get(key) is not None]
        if not have:
            continue
        if len(have) != len(instances):
            missing = sorted(set(range(len(instances))) - set(have))
            raise ValueError(f'samples {missing} have no {key!r} but samples {have} do')
        batch[key] = stack_same([s[key] for s in instances], key)
    batch['captions'] = [s.get('caption') for s in instances]
    batch['dataset_types'] = [s.get('dataset_type') for s in instances]
    batch.update(collate_bookkeeping(instances))
    return batch


@MODELS.register_module()
class MaskCaptionCycleDataPreprocessor(Sa2VADataPreprocessor):
    """Device move and image rules of cycle batches (and of the nested
    ``dam`` batch of the dual loop).

    * "option A" (``image{k} (B, 3, S, S)`` float ImageNet-normalised,
      ``mask{k} (B, S, S) float`` {0, 1}, k = 1, 2): on the device, batched,
      :func:`derive_mask_caption_batch` gives ``pixel_values{k} (B, 3,
      image_size, image_size)`` (bilinear, ``align_corners=False``),
      ``prompt_masks{k} (B, grid, grid) bool`` (nearest) and ``masks{k}``
      (``mask{k}`` itself, the GT); ``image{k}`` / ``mask{k}`` are removed.
      The batch then has the direct route's keys, shapes and dtypes.
    * ``pixel_values{1,2} (B, 3, s, s)``: uint8 -> /255, ImageNet-normalised
      (float32), then cast to ``dtype``; float -> cast.
    * ``g_pixel_values{1,2} (B, 3, S, S)`` uint8 -> SAM2-normalised
      ``sam2_dtype``.
    * Masks and prompt masks are only moved. ``data_stats`` / ``meta`` are
      dropped.

    Args as :class:`Sa2VADataPreprocessor` (``image_size``, ``grid``: the
    option-A sizes).

    Raises:
        ValueError: a frame given both ways (``image{k}`` with any of
        ``pixel_values{k}`` / ``prompt_masks{k}`` / ``masks{k}``), or
        ``image{k}`` without ``mask{k}`` (or the reverse).
    """

    def forward(self, data: dict, training: bool = False) -> dict:
        data = dict(data)
        if isinstance(data.get('dam'), dict):
            data['dam'] = self.forward(data['dam'], training)
        data.pop('data_stats', None)
        data.pop('meta', None)
        data = self.cast_data(data)
        for k in (1, 2):
            self._derive_option_a(data, k)
        for key in ('pixel_values1', 'pixel_values2'):
            if isinstance(data.get(key), Tensor):
                pixel = data[key]
                if pixel.dtype == torch.uint8:
                    pixel = normalize_uint8(pixel, self.mean, self.std)
                data[key] = pixel.to(self.dtype)
        for key in ('g_pixel_values1', 'g_pixel_values2'):
            if isinstance(data.get(key), Tensor):
                frames = data[key]
                data[key] = (normalize_sam2_images(frames, self.sam2_dtype)
                             if frames.dtype == torch.uint8 else frames.to(self.sam2_dtype))
        return data

    def _derive_option_a(self, data: dict, k: int) -> None:
        """Frame ``k``'s option-A keys -> direct-route keys, in place (the
        cast of ``pixel_values{k}`` to ``dtype`` follows in ``forward``)."""
        image, mask = data.get(f'image{k}'), data.get(f'mask{k}')
        if image is None and mask is None:
            return
        if image is None or mask is None:
            have, lack = ('image', 'mask') if mask is None else ('mask', 'image')
            raise ValueError(f'option-A frame {k}: the batch has {have}{k} but no {lack}{k} '
                             f'(MaskCaptionOutputs(route=\'option_a\') gives both)')
        both = [key for key in (f'pixel_values{k}', f'prompt_masks{k}', f'masks{k}')
                if data.get(key) is not None]
        if both:
            raise ValueError(f'frame {k} is given both ways: option-A image{k} / mask{k} '
                             f'and direct-route {both}; a batch must come from one '
                             f"MaskCaptionOutputs route ('direct' or 'option_a')")
        derived = derive_mask_caption_batch(image, mask, self.image_size, self.grid)
        del data[f'image{k}'], data[f'mask{k}']
        data[f'pixel_values{k}'] = derived['pixel_values']
        data[f'prompt_masks{k}'] = derived['prompt_masks']
        data[f'masks{k}'] = derived['gt_masks']


def interleave_kinds(n_pseudo: int, n_ref: int) -> List[str]:
    """The owner's per-epoch schedule: one RefCOCO batch first, the other
    ``n_ref - 1`` inserted before pseudo batch ``floor((j + 1) * n_pseudo /
    n_ref)`` (j = 0 .. n_ref - 2), i.e. evenly. Returns ``'r'`` / ``'p'`` per
    batch (``n_pseudo + n_ref`` entries)."""
    if n_ref <= 0:
        return ['p'] * n_pseudo
    before = [0] * (n_pseudo + 1)
    for j in range(n_ref - 1):
        before[(j + 1) * n_pseudo // n_ref] += 1
    kinds = ['r']
    for i in range(n_pseudo):
        kinds += ['r'] * before[i] + ['p']
    return kinds + ['r'] * before[n_pseudo]


@DATA_SAMPLERS.register_module()
class CycleInterleaveSampler(ResumableSampler):
    """Index order for ``MixedDataset([pseudo_mix, refcoco])``: homogeneous
    blocks of ``batch_size`` indices (one block = one batch), RefCOCO blocks
    interleaved evenly with one first (:func:`interleave_kinds`).

    Every rank gets its own shard of both parts but the same sequence of
    batch kinds (counts come from the global sizes), so collectives in the
    model line up. Deterministic given ``seed`` and the epoch
    (``set_epoch``).

    Resume: :class:`~projects.sa2va.datasets.samplers.ResumableSampler`
    (``set_start(k)``, ``k`` = batches trained x the dataloader's batch
    size, so with ``dam_datasets`` the DAM blocks count too; the rest equals
    the uninterrupted epoch's tail).

    Args:
        dataset: a ``MixedDataset`` whose last ``ref_datasets`` parts are
            the RefCOCO stream, or any dataset with ``cumulative_sizes``
            ``[P, P + R]``.
        batch_size: the dataloader's batch size (blocks are this long).
        refcoco_ratio: RefCOCO batches per pseudo batch; None = one pass
            over the RefCOCO shard per epoch (the owner). A ratio asking for
            more batches than the shard holds cycles through new permutations.
        shuffle: permute each part per epoch.
        seed: base seed (None = mmengine's synced random seed).
        ref_datasets: how many parts (after the pseudo ones) are RefCOCO.
        dam_datasets: dual loop: the last this many parts are Describe
            Anything; every block is then followed by ``batch_size`` indices
            of this rank's DAM shard (cycling through new permutations), so
            the dataloader's batch size must be ``2 * batch_size`` (the
            collate splits them into ``batch['dam']``).
    """

    def __init__(self, dataset, batch_size: int, refcoco_ratio: Optional[float] = None,
                 shuffle: bool = True, seed: Optional[int] = None, ref_datasets: int = 1,
                 dam_datasets: int = 0):
        from mmengine.dist import get_dist_info, sync_random_seed
        n_tail = ref_datasets + dam_datasets
        if hasattr(dataset, '_which'):      # MixedDataset: parts in order
            counts = torch.bincount(torch.as_tensor(dataset._which, dtype=torch.long),
                                    minlength=len(dataset.datasets)).tolist()
            sizes = [sum(counts[:-n_tail]), sum(counts[:len(counts) - dam_datasets])]
            sizes += [sum(counts)] if dam_datasets else []
        else:
            sizes = list(getattr(dataset, 'cumulative_sizes', []))
        if (len(sizes) != 2 + bool(dam_datasets) or not 0 < ref_datasets
                or dam_datasets < 0):
            raise ValueError('CycleInterleaveSampler needs a MixedDataset whose last '
                             '`ref_datasets` (+ `dam_datasets`) parts are RefCOCO (+ '
                             'Describe Anything), or a dataset with cumulative_sizes '
                             f'(pseudo, refcoco[, dam]); got sizes {sizes}')
        self.n_pseudo_samples, self.n_ref_samples = sizes[0], sizes[1] - sizes[0]
        self.n_dam_samples = sizes[2] - sizes[1] if dam_datasets else 0
        if dam_datasets and self.n_dam_samples < get_dist_info()[1]:
            raise ValueError(f'{self.n_dam_samples} Describe Anything samples: fewer than '
                             f'one per rank')
        self.batch_size = int(batch_size)
        self.rank, self.world = get_dist_info()
        self.shuffle = shuffle
        self.seed = sync_random_seed() if seed is None else int(seed)
        self.epoch = 0
        self.start = 0
        self.n_p = self.n_pseudo_samples // self.world // self.batch_size
        ref_batches = self.n_ref_samples // self.world // self.batch_size
        if refcoco_ratio is None:
            self.n_r = ref_batches
        else:
            self.n_r = max(1, round(float(refcoco_ratio) * self.n_p))
        if self.n_p == 0:
            raise ValueError(f'{self.n_pseudo_samples} pseudo samples give no batch of '
                             f'{self.batch_size} per rank ({self.world} ranks)')
        if self.n_r and self.n_ref_samples < self.world * self.batch_size:
            raise ValueError(f'{self.n_ref_samples} RefCOCO samples give no batch of '
                             f'{self.batch_size} per rank')
        self.kinds = interleave_kinds(self.n_p, self.n_r)

    def _order(self, n: int, count: int, offset: int, g: torch.Generator) -> List[int]:
        """``count`` indices of this rank's shard of a part, cycling epochs
        of permutations when more are needed."""
        out: List[int] = []
        while len(out) < count:
            perm = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
            shard = perm[self.rank::self.world][:n // self.world]
            out += (shard + offset).tolist()
        return out[:count]

    def epoch_indices(self) -> List[int]:
        """This rank's whole order of the current epoch (``start``
        ignored)."""
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        bs = self.batch_size
        pseudo = iter(self._order(self.n_pseudo_samples, self.n_p * bs, 0, g))
        ref = iter(self._order(self.n_ref_samples, self.n_r * bs, self.n_pseudo_samples, g)
                   if self.n_r else [])
        dam = iter(self._order(self.n_dam_samples, len(self.kinds) * bs,
                               self.n_pseudo_samples + self.n_ref_samples, g)
                   if self.n_dam_samples else [])
        out: List[int] = []
        for kind in self.kinds:
            source = ref if kind == 'r' else pseudo
            out += [next(source) for _ in range(bs)]
            if self.n_dam_samples:
                out += [next(dam) for _ in range(bs)]
        return out

    @property
    def num_samples(self) -> int:
        """Indices of a whole epoch on this rank."""
        return len(self.kinds) * self.batch_size * (2 if self.n_dam_samples else 1)


# ------------------------------------------------------------------------ helpers
def _global_max(n: int, device) -> int:
    """``n`` all-reduced with MAX over ranks (``n`` when not distributed)."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return int(n)
    t = torch.tensor([int(n)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def _pad_rows(rows: List[List[int]], pad_id: int, length: int, left: bool,
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


def _positions(att: Tensor) -> Tensor:
    """Position ids ``(B, L)``: 0.. over real tokens (left or right pad)."""
    return (att.cumsum(1) - 1).clamp(min=0)


# -------------------------------------------------------------------------- model
@MODELS.register_module()
class MaskCaptionCycleModel(Sa2VAModel):
    """Sa2VA trained by the mask -> caption -> mask cycle (loop 1) and the
    interleaved RefCOCO stream (registered as ``MaskCaptionCycleModel``).

    Args (besides :class:`Sa2VAModel`'s):
        template: chat template (name or dict, see
            ``transforms.text.get_template``); its ``SUFFIX`` is the end
            token sequence the teacher stops at (phi3 ``<|end|>``, ChatML
            ``<|im_end|>``).
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
        ref_llm_loss_weight: CE weight of the answer on RefCOCO batches.
        seg_questions / answers: templates (``{class_name}`` / ``[SEG]``).
        template_draw: 'batch' (owner: one q / a per batch) or 'sample'.
        caption_vision_grad: mlp1 gets gradient from the captioning
            forward too (the owner computes those features without grad).
        pad_to_global_max: pad sequence lengths to the max over ranks.
        ref_caption_max_tokens: GT captions longer than this raise.
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
                 ref_llm_loss_weight: float = 1.0,
                 seg_questions: Sequence[str] = SEG_QUESTIONS,
                 answers: Sequence[str] = ANSWER_LIST,
                 template_draw: str = 'batch',
                 caption_vision_grad: bool = True,
                 pad_to_global_max: bool = True,
                 ref_caption_max_tokens: int = 256,
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
        self.encoder = ConversationEncoder(self.tokenizer, template)
        suffix = self.encoder.template.get('SUFFIX') or ''
        self.end_ids = self.encoder.encode_text(suffix)
        if not self.end_ids:
            raise ValueError('the chat template has no SUFFIX: the teacher needs an end token')
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
        special = set(self.tokenizer.all_special_ids)
        special |= set(int(i) for i in self.tokenizer.added_tokens_decoder)
        special |= set(range(len(self.tokenizer), vocab))  # untrained padding rows
        special |= {self.seg_token_id, self.mllm.img_context_token_id, self.eos_id,
                    self.pad_id, *self.end_ids}
        self.register_buffer('special_ids', torch.tensor(sorted(special), dtype=torch.long),
                             persistent=False)
        self.register_buffer('allowed_ids', allowed_token_ids(vocab, special),
                             persistent=False)

        # EMA shadow (fp32) of the trainable mllm parameters.
        self._ema_names = [f'mllm.{n}' for n, p in self.mllm.named_parameters()
                           if p.requires_grad]
        self.ema_shadow = nn.Module()
        for name in self._ema_names:
            p = self.get_parameter(name)
            self.ema_shadow.register_buffer(self._shadow_key(name),
                                            torch.zeros(p.shape, dtype=torch.float32))
        # [initialised (0/1), number of updates]
        self.register_buffer('ema_state', torch.zeros(2, dtype=torch.long))
        self.last_pseudo_captions: List[str] = []

    # ---------------------------------------------------------------- EMA
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
                  'seg_llm_loss_weight', 'ref_llm_loss_weight', 'seg_questions', 'answers',
                  'template_draw', 'caption_vision_grad', 'pad_to_global_max',
                  'ref_caption_max_tokens', 'dual_loop')

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
        return _global_max(n, device) if self.pad_to_global_max else int(n)

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
            ``lengths (B,) long`` (caption tokens, the end token excluded),
            ``stopped (B,) bool`` (ended by the end token or EOS before T),
            ``counts (B,) long`` (K_i).

        Raises:
            ValueError: every caption of the batch is empty (all padding).
        """
        t_max = int(max_new_tokens or self.caption_len)
        counts = (prompt_masks1 != 0).flatten(1).sum(1)
        rows = [self.caption_prompt_ids(int(k)) for k in counts.tolist()]
        device = pixel_values1.device
        length = self._maybe_global(max(len(r) for r in rows), device)
        ids, att = _pad_rows(rows, self.pad_id, length, left=True, device=device)
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
        """KV-cached greedy decoding from left-padded ``embeds (B, P, D)``;
        a sample stops at the end sequence or EOS, the rest is padding."""
        from transformers import DynamicCache
        body = self._llm_body()
        emb_layer = self.mllm.get_input_embeddings()
        b, device = embeds.shape[0], embeds.device
        pos = _positions(att)
        cache = DynamicCache()
        out = body(inputs_embeds=embeds, attention_mask=att, position_ids=pos,
                   past_key_values=cache, use_cache=True)
        hidden = out.last_hidden_state[:, -1]
        next_pos = pos[:, -1:] + 1
        gen = torch.full((b, t_max), self.pad_id, dtype=torch.long, device=device)
        lengths = torch.full((b,), t_max, dtype=torch.long, device=device)
        finished = torch.zeros(b, dtype=torch.bool, device=device)
        end = torch.tensor(self.end_ids, dtype=torch.long, device=device)
        n_end = end.numel()
        for t in range(t_max):
            nxt = self._lm_head(hidden).argmax(-1)
            gen[:, t] = torch.where(finished, gen[:, t], nxt)
            hit_eos = nxt == self.eos_id
            hit_end = torch.zeros_like(finished)
            if t + 1 >= n_end:
                hit_end = (gen[:, t + 1 - n_end:t + 1] == end).all(1)
            new = ~finished & (hit_eos | hit_end)
            lengths = torch.where(new & hit_end, torch.full_like(lengths, t + 1 - n_end),
                                  lengths)
            lengths = torch.where(new & hit_eos & ~hit_end, torch.full_like(lengths, t),
                                  lengths)
            finished = finished | new
            if bool(finished.all()) or t == t_max - 1:
                break
            att = torch.cat([att, att.new_ones(b, 1)], 1)
            out = body(inputs_embeds=emb_layer(nxt[:, None]), attention_mask=att,
                       position_ids=next_pos, past_key_values=cache, use_cache=True)
            hidden = out.last_hidden_state[:, -1]
            next_pos = next_pos + 1
        keep = torch.arange(t_max, device=device)[None] < lengths[:, None]
        return torch.where(keep, gen, torch.full_like(gen, self.pad_id)), lengths, finished

    # ------------------------------------------- step 2-4: student + Gumbel
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
        ids, att = _pad_rows(rows, self.pad_id, length, left=False, device=device)
        flags, vp, pm = self._vp_inputs(pixel_values1, prompt_masks1)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.caption_vision_grad):
            vit = self.mllm.extract_feature(pixel_values1)
        embeds = self._merge(ids, vit, flags, vp, pm)
        hidden = self._llm_body()(inputs_embeds=embeds, attention_mask=att,
                                  position_ids=_positions(att)).last_hidden_state
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
        ``{class_name}`` slot.

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
        b, device = pixel_values2.shape[0], pixel_values2.device
        lens = [int(n) for n in lengths.tolist()]
        if caption_embeds.shape[0] != sum(lens):
            raise ValueError(f'{caption_embeds.shape[0]} caption rows for lengths {lens}')
        rows, slots, labels = [], [], []
        for i, (q, a) in enumerate(self._draw_templates(b)):
            pre, suf, ans = self.seg_pieces(q, a)
            row = pre + [self.pad_id] * lens[i] + suf + ans
            rows.append(row)
            slots.append((len(pre), lens[i]))
            labels.append(len(row) - len(ans))
        length = self._maybe_global(max(len(r) for r in rows), device)
        ids, att = _pad_rows(rows, self.pad_id, length, left=False, device=device)
        slot = torch.zeros_like(att, dtype=torch.bool)
        lab = torch.full_like(ids, IGNORE_INDEX)
        for i, ((s, n), a0) in enumerate(zip(slots, labels)):
            slot[i, s:s + n] = True
            lab[i, a0:len(rows[i])] = ids[i, a0:len(rows[i])]
        vit = self.mllm.extract_feature(pixel_values2)
        flags = torch.ones(b, dtype=torch.long, device=device)
        embeds = self._merge(ids, vit, flags, None, None)
        embeds = embeds.masked_scatter(slot[..., None], caption_embeds.to(embeds.dtype))
        hidden = self._llm_body()(inputs_embeds=embeds, attention_mask=att,
                                  position_ids=_positions(att)).last_hidden_state
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
        unknown = set(batch) - set(_CYCLE_KEYS)
        if unknown:
            hint = (' (option-A keys: run the batch through '
                    'MaskCaptionCycleDataPreprocessor)' if unknown & set(_OPTION_A_KEYS) else '')
            raise TypeError(f'unexpected batch keys {sorted(unknown)}{hint}')
        captions = list(captions or [None] * batch['pixel_values2'].shape[0])
        with_text = [c is not None for c in captions]
        if any(with_text) and not all(with_text):
            raise ValueError(f'batch mixes GT-caption samples {with_text}: RefCOCO and '
                             f'pseudo samples must come in separate batches')
        if (dam is not None) != (self.dual_loop is not None):
            raise ValueError('a `dam` sub-batch comes with dual_loop and only with it '
                             f'(dual_loop={self.dual_loop}, dam given: {dam is not None})')
        if all(with_text):
            out = self._refcoco_loss(captions, batch)
        else:
            out = self._loop1_loss(batch)[0]
        if dam is not None:
            out.update(self._loop2_loss(dam))
        return out

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

        GT caption ids (truncated to T2) -> frozen embeddings -> referring
        question on the image -> predicted mask (B2, h, w) and the answer CE
        L_segA; mask -> sigmoid -> 16 x 16 average pool -> > threshold (no
        gradient) -> region prompt (K = cells, empty grids kept) -> teacher-
        forced CE of the GT caption ids plus the template end token (no pad
        targets, unlike v2). Returns ``loss_dam_ce``, ``loss_dam_seg_llm``
        (weighted) and the monitor ``dam_k0_rate``."""
        cfg = self.dual_loop
        captions = dam.get('captions') or []
        if not captions or any(not isinstance(c, str) or not c for c in captions):
            raise ValueError(f'every dam sample needs a GT caption, got {captions!r}')
        ids = [self.tokenizer.encode(c, add_special_tokens=False)[:cfg['caption_len']]
               for c in captions]
        empty = [i for i, x in enumerate(ids) if not x]
        if empty:
            raise ValueError(f'dam samples {empty} have captions with no tokens')
        device = dam['pixel_values1'].device
        flat = torch.tensor([t for x in ids for t in x], dtype=torch.long, device=device)
        embeds = self.mllm.get_input_embeddings()(flat).detach()
        lengths = torch.tensor([len(x) for x in ids], device=device)
        seg, pred = self.segment_with_caption(
            embeds, lengths, dam['pixel_values1'], dam['g_pixel_values1'], dam['masks1'], 1.0)
        with torch.no_grad():
            grid = F.adaptive_avg_pool2d(pred.float().sigmoid()[:, None], (16, 16))[:, 0]
            grid = grid > cfg['grid_threshold']
        targets = [x + list(self.end_ids) for x in ids]
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

    def _refcoco_loss(self, captions: Sequence[str], batch: dict) -> Dict[str, Tensor]:
        ids = [self.tokenizer.encode(c, add_special_tokens=False) for c in captions]
        long = [i for i, x in enumerate(ids) if len(x) > self.ref_caption_max_tokens]
        if long:
            raise ValueError(f'GT captions of samples {long} exceed ref_caption_max_tokens '
                             f'({self.ref_caption_max_tokens})')
        if any(len(x) == 0 for x in ids):
            raise ValueError(f'empty GT caption in samples '
                             f'{[i for i, x in enumerate(ids) if not x]}')
        device = batch['pixel_values2'].device
        flat = torch.tensor([t for x in ids for t in x], dtype=torch.long, device=device)
        embeds = self.mllm.get_input_embeddings()(flat)
        lengths = torch.tensor([len(x) for x in ids], device=device)
        losses, _ = self.segment_with_caption(
            embeds, lengths, batch['pixel_values2'], batch['g_pixel_values2'],
            batch['masks2'], self.ref_llm_loss_weight)
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
        losses, pred = self.segment_with_caption(
            cap_embeds, lengths, batch['pixel_values2'], batch['g_pixel_values2'],
            batch['masks2'], self.seg_llm_loss_weight)
        n_valid = max(1, int(valid.sum()))
        ref = losses['loss_mask']
        out = {'loss_mask': losses['loss_mask'], 'loss_dice': losses['loss_dice'],
               'loss_seg_llm': losses['loss_llm'],
               'cap_len': lengths.float().mean(),
               'cap_eos_rate': teacher['stopped'].float().mean(),
               'k0_rate': (teacher['counts'] == 0).float().mean(),
               'corrupt_rate': chosen.sum().float() / n_valid,
               'gumbel_tau': ref.new_tensor(self.current_tau).detach(),
               'ema_decay': ref.new_tensor(self.ema_decay).detach()}
        self.last_pseudo_captions = [
            self.tokenizer.decode(tokens[i, :int(n)].tolist(), skip_special_tokens=False)
            for i, n in enumerate(lengths.tolist())]
        inter = dict(pseudo=tokens, corrupted=corrupted, lengths=lengths, logits=logits,
                     caption_embeds=cap_embeds, hard_ids=hard, pred=pred)
        return out, inter


# ----------------------------------------------------------- dual loop: surgery
def combine_gradients(g1: Sequence[Optional[Tensor]], g2: Sequence[Optional[Tensor]],
                      rule: str = 'owner', beta: float = 0.5
                      ) -> Tuple[List[Optional[Tensor]], Dict[str, float]]:
    """Combine the loop-1 and loop-2 gradients of the same parameters.

    The scalars are taken over the concatenation of all parameters (None =
    zeros): ``dot = <g1, g2>``, ``c = dot / |g1|^2`` (0 when ``|g1| = 0``).
    ``rule='owner'``: ``g = g1 + beta * (g2 - c g1)`` always (the owner's
    v2: loop 2 projected orthogonal to loop 1 even when they agree);
    ``'pcgrad'``: the projection only when ``dot < 0``; ``'sum'``:
    ``g = g1 + beta * g2``.

    Args:
        g1, g2: one entry per parameter, float tensors of the parameter's
            shape or None (no gradient from that loss).
        rule: 'owner', 'pcgrad' or 'sum'.
        beta: weight of the (projected) loop-2 gradient.

    Returns:
        (``g`` list (None where both are None), stats ``{'dot', 'cos',
        'c'}`` as floats, ``c`` the projection coefficient applied).
    """
    if rule not in ('owner', 'pcgrad', 'sum'):
        raise ValueError(f"rule must be 'owner', 'pcgrad' or 'sum', got {rule!r}")
    if len(g1) != len(g2):
        raise ValueError(f'{len(g1)} loop-1 gradients vs {len(g2)} loop-2 gradients')
    pairs = [(a, b) for a, b in zip(g1, g2) if a is not None or b is not None]
    if not pairs:
        return [None] * len(g1), dict(dot=0.0, cos=0.0, c=0.0)
    ref = next(a if a is not None else b for a, b in pairs)
    zero = ref.new_zeros((), dtype=torch.float64)
    dot, n1, n2 = zero.clone(), zero.clone(), zero.clone()
    for a, b in pairs:
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
            continue
        g = (a.clone() * (1.0 - beta * c)) if a is not None else torch.zeros_like(b)
        if b is not None:
            g = g + beta * b
        out.append(g)
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
                 amp_dtype: Optional[str] = None, norm_groups: Optional[dict] = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.norm_groups = dict(self.NORM_GROUPS if norm_groups is None else norm_groups)
        self._param_group: Dict[int, Optional[str]] = {}
        combine_gradients([], [], rule, beta)        # validates the rule
        self.rule, self.beta = rule, float(beta)
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
            got = [torch.zeros_like(p) if g is None else g for p, g in zip(params, got)]
            grads.append(self._all_reduce_mean(got))
        combined, stats = combine_gradients(grads[0], grads[1], self.rule, self.beta)
        for i, gs in enumerate(grads):
            sq: Dict[str, float] = {}
            for p, g in zip(params, gs):
                group = self._param_group.get(id(p))
                if group is not None:
                    sq[group] = sq.get(group, 0.0) + float(g.double().pow(2).sum())
            for group, v in sq.items():
                stats[f'g{i + 1}_{group}'] = v ** 0.5
        for p, g in zip(params, combined):
            p.grad = g.to(p.dtype) if p.grad is None else p.grad + g.to(p.dtype)
        for k, v in stats.items():
            self.message_hub.update_scalar(f'train/dual_{k}', v)
        self._inner_count += 1
        if self.should_update():
            self.step(**(step_kwargs or {}))
            self.zero_grad(**(zero_kwargs or {}))
