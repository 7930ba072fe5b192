"""Sa2VA: InternVL chat model + SAM2, joined by the ``[SEG]`` token.

The path of a grounding sample (one image, or T frames of a video)::

    input_ids with k [SEG] tokens ── InternVLChat (ViT tiles spliced into
        <IMG_CONTEXT>, visual-prompt rows, LLM) ── last hidden state at each
        [SEG] position (B, T, D)[seg] -> (k, D)
    -> text_hidden_fcs (Linear D->D, ReLU, Linear D->C, Dropout 0)  (k, C)
    -> SAM2 sparse prompt (after the padding point) ── mask decoder on the
        sample's frame features (+ no_mem_embed, high-res features),
        multimask output, best-IoU mask
    -> low-res logits (k * T, 1, S/4, S/4)   object-major: object 0's T frames
    -> loss vs GT masks (k * T, H, W) resized nearest to S/4:
       BCE (w 2.0) + naive Dice (w 0.5) on 12544 importance-sampled points.

Each object's ``[SEG]`` embedding prompts every frame of its sample. Several
objects and frames share one SAM2 image-encoder pass per frame
(``image_index``), so samples may have different object counts; Sa2VA's fixed
count of 5 (repeat / sample) is only an explicit, counted option
(``fix_objects``). A count mismatch raises, naming the sample.

State-dict keys: ``mllm.*`` (InternVLChat: ``vision_model.*``, ``mlp1.*``,
``language_model.*``, peft-wrapped while LoRA is on), ``grounding_encoder.*``
(official SAM2 keys), ``text_hidden_fcs.{0,2}.*``.
"""
from __future__ import annotations

import logging
import os
import re
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModel
from torch import Tensor, nn

from ..constants import IGNORE_INDEX, SA2VA_SPECIAL_TOKENS, SEG_TOKEN
from ..registry import MODELS
from ..tokenization import add_special_tokens, single_token_id
from ..transforms.formatting import build_tokenizer
from .losses import resize_gt_masks, sample_mask_points
from .sam2 import normalize_sam2_images

# Sa2VA-4B's trainable setting (the defaults of the ``mllm`` dict).
DEFAULT_MLLM_OPTIONS = dict(freeze_vision=True, freeze_llm=True,
                            freeze_mlp1=False)
DEFAULT_LLM_LORA = dict(r=128, lora_alpha=256, lora_dropout=0.05)

# Key rewrites from a Sa2VA v1 (xtuner) checkpoint to this model's layout:
# its InternVL sits under ``mllm.model.``, SAM2 under
# ``grounding_encoder.sam2_model.``. xtuner's get_peft_model_state_dict keeps
# the adapter name (``.lora_A.default.weight``, unchanged here); a file saved
# with peft's own get_peft_model_state_dict drops it (``.lora_A.weight``),
# which the last rule puts back. v1 also saves the whole ``embed_tokens`` /
# ``lm_head`` matrices (it trains them whole): ``load_pretrained`` splits a
# whole matrix into this model's base layer and trainable-token rows.
SA2VA_V1_REVISE_KEYS = (
    (r'^mllm\.model\.', 'mllm.'),
    (r'^grounding_encoder\.sam2_model\.', 'grounding_encoder.'),
    (r'\.(lora_[AB])\.weight$', r'.\1.default.weight'),
)
# How the input embedding and lm_head train (``train_embeddings``).
TRAIN_EMBEDDINGS = ('new_rows', 'all')

# Parts of a trainable SAM2 mask decoder that the mask losses cannot reach:
# the IoU head only picks the best of the multimask outputs (argmax) and the
# object-score head is not used by the language-prompted path. Sa2VA v1 leaves
# them "trainable" but they never get a gradient (AdamW skips them); we freeze
# them so that the trainable set is exactly what the losses train.
SAM2_LOSS_UNREACHABLE = ('sam_mask_decoder.iou_prediction_head',
                         'sam_mask_decoder.pred_obj_score_head')

# Batch keys that are bookkeeping, not model inputs.
_IGNORED_KEYS = ('num_tiles', 'data_stats', 'meta')
# Option-A keys of the collate, consumed by Sa2VADataPreprocessor.
_OPTION_A_KEYS = ('option_a_images', 'option_a_tile_index', 'option_a_masks',
                  'option_a_prompt_index')


def _plain(cfg):
    """mmengine ConfigDict (nested) -> plain dict / list."""
    if hasattr(cfg, 'to_dict'):
        return cfg.to_dict()
    if isinstance(cfg, dict):
        return {k: _plain(v) for k, v in cfg.items()}
    return cfg


def _build_tokenizer(tokenizer, mllm_cfg: dict):
    """A tokenizer object from a directory path, a ``dict(type=callable,
    ...)``, an object, or None (the InternVL ``model_path``)."""
    if tokenizer is None:
        tokenizer = mllm_cfg.get('model_path')
        if tokenizer is None:
            raise ValueError('Sa2VAModel needs `tokenizer` (a tokenizer '
                             'directory) when mllm has no model_path')
    if isinstance(tokenizer, os.PathLike):
        tokenizer = os.fspath(tokenizer)
    return build_tokenizer(tokenizer)


def _embedding_names(llm: nn.Module) -> Tuple[str, Optional[str]]:
    """Module names of the input embedding and of the lm_head (None when
    the lm_head is tied to the input embedding or absent)."""
    emb = llm.get_input_embeddings()
    out = llm.get_output_embeddings()
    names = {id(m): n.rsplit('.', 1)[-1] for n, m in llm.named_modules()}
    tied = out is None or out.weight is emb.weight
    return names[id(emb)], None if tied else names[id(out)]


@MODELS.register_module()
class Sa2VAModel(BaseModel):
    """The Sa2VA model (registered as ``Sa2VAModel``).

    Args:
        mllm: ``InternVLChat`` build dict (``projects.sa2va.models.internvl
            .build_internvl_chat``): ``type='InternVLChat'`` with
            ``model_path`` (a checkpoint directory) or ``config`` (dict), and
            ``torch_dtype``, ``gradient_checkpointing`` ... Trainable
            options (defaults Sa2VA-4B's): ``freeze_vision=True``,
            ``freeze_llm=True``, ``freeze_mlp1=False``, ``llm_lora=dict(r=128,
            lora_alpha=256, lora_dropout=0.05)`` (None: no LoRA). Do not put
            a ``tokenizer`` in it.
        grounding_encoder: SAM2 build dict (``type='SAM2'``, ``config`` preset
            name or yaml-structured dict, ``checkpoint``, ``trainable``
            prefixes, default the mask decoder only).
        tokenizer: tokenizer directory (default the mllm ``model_path``), a
            ``dict(type=callable, **kwargs)``, or a tokenizer object. Sa2VA's
            ``special_tokens`` are added to it (idempotent) and the LLM
            embeddings grow once to ``len(tokenizer)``.
        special_tokens: tokens added to the tokenizer (``[SEG]`` must be one).
        loss_mask, loss_dice: loss build dicts (``MaskBCELoss`` weight 2.0,
            ``MaskDiceLoss`` weight 0.5 eps 1.0).
        llm_loss_weight: factor of the LM cross-entropy.
        num_points, oversample_ratio, importance_sample_ratio: point
            sampling of the mask losses (12544, 3.0, 0.75); ``num_points=None``
            computes the losses on every pixel of the low-res masks.
        train_embeddings: ``'new_rows'`` (default): with LoRA only the
            embedding rows of ``special_tokens`` train (a peft
            trainable-token delta; ``train_new_token_rows``,
            ``train_lm_head``). ``'all'``: Sa2VA v1's recipe, the whole
            input embedding and the whole lm_head require grad (so weight
            decay, the gradient norm and clipping see every row, as in v1);
            a tied lm_head becomes its own matrix (peft's modules_to_save).
        train_new_token_rows: with LoRA and ``'new_rows'``, the embedding
            rows of ``special_tokens`` are trainable (peft trainable tokens).
        train_lm_head: with LoRA, the whole lm_head is trainable (Sa2VA);
            False trains only the special-token rows of it. With a tied
            lm_head, True makes the whole shared matrix trainable.
        freeze_unreachable_sam2: freeze the mask decoder's IoU and
            object-score heads (``SAM2_LOSS_UNREACHABLE``), which no loss
            reaches; without it they stay trainable with no gradient (DDP
            then needs ``find_unused_parameters``).
        fix_objects: None (default) keeps every object of a sample. An int
            ``n`` is Sa2VA's policy: a sample with fewer objects repeats
            them cyclically up to ``n``, one with more keeps a random ``n``
            (torch RNG); each case is counted in the loss dict
            (``objects_repeated``, ``objects_sampled``, numbers of samples)
            and logged at DEBUG level.
        save_trainable_only: ``state_dict()`` returns only parameters with
            ``requires_grad`` (the checkpoint of a run; rebuilding needs the
            config, which mmengine stores in the checkpoint meta). Use
            ``state_dict(trainable_only=False)`` for everything.
        pretrained_pth: a Sa2VA-style checkpoint (``.pth`` with or without a
            ``state_dict`` key, or ``.safetensors``) loaded after building;
            keys are rewritten with ``pretrained_revise_keys`` (default: the
            Sa2VA v1 layout to ours); any key left unknown raises.
        pretrained_revise_keys: ``(regex, replacement)`` pairs.
        pretrained_hf: a released Hugging Face Sa2VA directory
            (``./pretrained/Sa2VA-4B``; official layout, see
            :mod:`projects.sa2va.hf`) whose merged weights become this
            model's weights (LoRA adapters start fresh). ``mllm.model_path``
            is then replaced by the directory's ``config.json`` (no base
            InternVL checkpoint is read), ``grounding_encoder.checkpoint`` is
            dropped, and ``tokenizer=None`` reads the directory's tokenizer.
            Loaded before ``pretrained_pth``.
        data_preprocessor: default ``Sa2VADataPreprocessor``.
    """

    def __init__(self,
                 mllm: dict,
                 grounding_encoder: dict,
                 tokenizer: Any = None,
                 special_tokens: Sequence[str] = SA2VA_SPECIAL_TOKENS,
                 loss_mask: Optional[dict] = None,
                 loss_dice: Optional[dict] = None,
                 llm_loss_weight: float = 1.0,
                 num_points: Optional[int] = 12544,
                 oversample_ratio: float = 3.0,
                 importance_sample_ratio: float = 0.75,
                 train_embeddings: str = 'new_rows',
                 train_new_token_rows: bool = True,
                 train_lm_head: bool = True,
                 freeze_unreachable_sam2: bool = True,
                 fix_objects: Optional[int] = None,
                 save_trainable_only: bool = True,
                 pretrained_pth: Optional[str] = None,
                 pretrained_revise_keys: Sequence[Tuple[str, str]] = SA2VA_V1_REVISE_KEYS,
                 pretrained_hf: Optional[str] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        if data_preprocessor is None:
            data_preprocessor = dict(type='Sa2VADataPreprocessor')
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if SEG_TOKEN not in special_tokens:
            raise ValueError(f'special_tokens must contain {SEG_TOKEN}')
        if fix_objects is not None and fix_objects < 1:
            raise ValueError(f'fix_objects must be None or >= 1, got {fix_objects}')
        if train_embeddings not in TRAIN_EMBEDDINGS:
            raise ValueError(f'train_embeddings must be one of {TRAIN_EMBEDDINGS}, '
                             f'got {train_embeddings!r}')
        if train_embeddings == 'all' and not (train_lm_head and train_new_token_rows):
            raise ValueError("train_embeddings='all' trains every embedding and lm_head "
                             "row: it cannot go with train_lm_head=False or "
                             "train_new_token_rows=False")
        self.train_embeddings = train_embeddings
        mllm_cfg = _plain(mllm)
        if 'tokenizer' in mllm_cfg:
            raise ValueError('give the tokenizer to Sa2VAModel(tokenizer=...), '
                             'not inside mllm')
        tokenizer_given = tokenizer is not None
        if pretrained_hf is not None:
            from ..hf import hf_build_overrides
            mllm_cfg, grounding_encoder, tokenizer = hf_build_overrides(
                pretrained_hf, mllm_cfg, _plain(grounding_encoder), tokenizer)
        self.tokenizer = _build_tokenizer(tokenizer, mllm_cfg)
        self.special_tokens = tuple(special_tokens)
        token_ids = add_special_tokens(self.tokenizer, self.special_tokens)
        self.seg_token_id = single_token_id(self.tokenizer, SEG_TOKEN)

        llm_lora = mllm_cfg.pop('llm_lora', DEFAULT_LLM_LORA)
        for key, value in DEFAULT_MLLM_OPTIONS.items():
            mllm_cfg.setdefault(key, value)
        self.mllm = MODELS.build(dict(mllm_cfg, tokenizer=self.tokenizer))
        if llm_lora is not None:
            self._wrap_lora(dict(llm_lora), sorted(token_ids.values()),
                            train_new_token_rows and train_embeddings == 'new_rows',
                            train_lm_head)
        if train_embeddings == 'all':
            self._train_whole_embeddings()

        self.grounding_encoder = MODELS.build(_plain(grounding_encoder))
        if freeze_unreachable_sam2:
            for name, p in self.grounding_encoder.named_parameters():
                if name.startswith(SAM2_LOSS_UNREACHABLE):
                    p.requires_grad_(False)
        # InternVLChat: config.llm_config; QwenVLChat: llm_hidden_size
        d_llm = getattr(self.mllm, 'llm_hidden_size', None) or \
            self.mllm.config.llm_config.hidden_size
        d_sam = self.grounding_encoder.hidden_dim
        self.text_hidden_fcs = nn.Sequential(
            nn.Linear(d_llm, d_llm), nn.ReLU(inplace=True),
            nn.Linear(d_llm, d_sam), nn.Dropout(0.0))

        self.loss_mask = MODELS.build(loss_mask or dict(type='MaskBCELoss', loss_weight=2.0))
        self.loss_dice = MODELS.build(
            loss_dice or dict(type='MaskDiceLoss', loss_weight=0.5, eps=1.0))
        self.llm_loss_weight = float(llm_loss_weight)
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.fix_objects = fix_objects
        self.save_trainable_only = save_trainable_only
        if pretrained_hf is not None:
            from ..hf.convert import check_tokenizer, load_hf_weights
            if tokenizer_given:
                check_tokenizer(self, pretrained_hf)
            info = load_hf_weights(self, pretrained_hf)
            print_log(f'loaded {info["loaded"]} tensors from {pretrained_hf} '
                      f'({info["layout"]}, template {info["template"]})', logger='current')
        if pretrained_pth is not None:
            self.load_pretrained(pretrained_pth, pretrained_revise_keys)

    # ------------------------------------------------------------- building
    def _wrap_lora(self, lora: dict, token_rows: List[int],
                   train_new_token_rows: bool, train_lm_head: bool) -> None:
        """LoRA on the LLM; special-token rows and lm_head as configured."""
        llm = self.mllm.language_model
        emb_name, out_name = _embedding_names(llm)
        tied = out_name is None
        rows: Dict[str, List[int]] = {}
        if train_new_token_rows and not (tied and train_lm_head):
            rows[emb_name] = token_rows
        if not train_lm_head and not tied and train_new_token_rows:
            rows[out_name] = token_rows
        if 'trainable_token_indices' in lora:
            raise ValueError('set train_new_token_rows / train_lm_head on '
                             'Sa2VAModel instead of trainable_token_indices')
        self.mllm.wrap_llm_lora(**lora, trainable_token_indices=rows or None)
        if train_lm_head:
            self.mllm.get_output_embeddings().weight.requires_grad_(True)

    def _train_whole_embeddings(self) -> None:
        """``train_embeddings='all'``: the input embedding and the lm_head
        train whole. As peft's ``modules_to_save=['lm_head', 'embed_tokens']``
        (Sa2VA v1, the Sa2VA-Qwen recipes), which trains a copy of each module,
        a lm_head tied to the input embedding (Qwen2.5-VL-3B, Qwen3-VL-2B/4B)
        becomes its own matrix, initialised from the shared one, and the
        config says ``tie_word_embeddings=False`` (as the released Sa2VA-Qwen
        checkpoints do)."""
        emb, out = self.mllm.get_input_embeddings(), self.mllm.get_output_embeddings()
        if out is not None and out.weight is emb.weight:
            out.weight = nn.Parameter(emb.weight.detach().clone())
            config = self.mllm.config
            for cfg in {id(c): c for c in (config, getattr(config, 'get_text_config',
                                                           lambda: config)())}.values():
                cfg.tie_word_embeddings = False
        emb.weight.requires_grad_(True)
        if out is not None:
            out.weight.requires_grad_(True)

    @property
    def sam2(self):
        """The SAM2 model (``grounding_encoder``)."""
        return self.grounding_encoder

    @property
    def low_res_size(self) -> Tuple[int, int]:
        """``(h, w)`` of the predicted masks: 4 x the SAM2 feature grid
        (256 x 256 for a 1024 input)."""
        s = 4 * self.grounding_encoder.sam_image_embedding_size
        return s, s

    # ---------------------------------------------------------- checkpoints
    def state_dict(self, *args, trainable_only: Optional[bool] = None,
                   **kwargs) -> Dict[str, Tensor]:
        """The model's state dict; with ``trainable_only`` (default
        ``save_trainable_only``) only the parameters that require grad
        (LoRA adapters, trainable token rows, lm_head, mlp1, SAM2 mask
        decoder, text_hidden_fcs in the Sa2VA-4B setting)."""
        full = super().state_dict(*args, **kwargs)
        if trainable_only is None:
            trainable_only = self.save_trainable_only
        if not trainable_only:
            return full
        prefix = kwargs.get('prefix', args[1] if len(args) > 1 else '')
        keep = {prefix + n for n, p in self.named_parameters() if p.requires_grad}
        return type(full)((k, v) for k, v in full.items() if k in keep)

    def complete_state_dict(self, state: Dict[str, Tensor], source: str = 'checkpoint'
                            ) -> Dict[str, Tensor]:
        """A full state dict from a run checkpoint's (trainable-only) one.

        The check is strict on what a run trains: every key of ``state``
        must be a key of the model and every parameter that requires grad
        must be in ``state``. Keys the checkpoint leaves out (the frozen
        weights, rebuilt from the config's checkpoints or seeded init) are
        filled with the model's current tensors (no copy), so that a loader
        reports nothing missing.

        Args:
            state: ``{key: tensor}`` without a wrapper prefix (``module.``).
            source: the file's name for the error message.

        Returns:
            ``{key: tensor}`` with every key of ``state_dict(trainable_only=
            False)``; values from ``state`` where given.

        Raises:
            ValueError: naming unknown keys and missing trainable keys.
        """
        full = super().state_dict(keep_vars=True)
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        unknown = sorted(k for k in state if k not in full)
        missing = sorted(trainable.difference(state))
        if unknown or missing:
            raise ValueError(
                f'{source} does not match this Sa2VAModel: unknown keys '
                f'({len(unknown)}) {unknown[:10]}; trainable keys missing '
                f'({len(missing)}) {missing[:10]} (is it from a run with the '
                f'same LoRA / trainable settings?)')
        out = type(state)() if isinstance(state, dict) else {}
        for key, value in full.items():
            out[key] = state[key] if key in state else value.detach()
        if hasattr(state, '_metadata'):
            out._metadata = state._metadata
        return out

    def load_pretrained(self, path: str,
                        revise_keys: Sequence[Tuple[str, str]] = SA2VA_V1_REVISE_KEYS
                        ) -> List[str]:
        """Load a Sa2VA-style checkpoint over the built model.

        Args:
            path: ``.pth`` / ``.pt`` (a state dict, or ``{'state_dict': ...}``
                as mmengine / xtuner save it) or ``.safetensors``.
            revise_keys: regex rewrites applied in order to every key the
                model does not have as it is.

        Returns:
            the model keys that were loaded (sorted).

        Raises:
            ValueError: naming keys the model does not have or whose shapes
            differ (nothing is loaded then). Model keys absent from the file
            keep their built values (a trainable-only checkpoint).
        """
        if str(path).endswith('.safetensors'):
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            from ..engine.checkpoint import safe_torch_load
            state = safe_torch_load(str(path))  # weights-only, errors name it
            if isinstance(state, dict) and isinstance(state.get('state_dict'), dict):
                state = state['state_dict']
        own = super().state_dict()
        revised = {}
        for key, value in state.items():
            if key not in own:  # a key the model has is never rewritten
                for pattern, repl in revise_keys:   # (QwenVLChat's own keys
                    key = re.sub(pattern, repl, key)  # start with mllm.model.)
            revised[key] = value
        revised = self._split_whole_embeddings(revised, own)
        unknown = sorted(k for k in revised if k not in own)
        misshaped = sorted(f'{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}'
                           for k, v in revised.items()
                           if k in own and tuple(v.shape) != tuple(own[k].shape))
        if unknown or misshaped:
            raise ValueError(f'{path} does not match Sa2VAModel: unknown keys '
                             f'({len(unknown)}) {unknown[:20]}; mis-shaped '
                             f'({len(misshaped)}) {misshaped[:20]}')
        self.load_state_dict(revised, strict=False)
        print_log(f'loaded {len(revised)} tensors from {path}', logger='current')
        return sorted(revised)

    def _split_whole_embeddings(self, state: Dict[str, Tensor],
                                own: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """A whole ``embed_tokens`` / ``lm_head`` matrix (Sa2VA v1 trains and
        saves them whole) for a module that trains only some rows here (peft
        trainable tokens): the matrix goes to the base layer
        (``...token_adapter.base_layer.weight``) and its special-token rows
        to the trainable rows (``...trainable_tokens_delta.<adapter>``)."""
        modules = dict(self.named_modules())
        out = dict(state)
        for key, value in state.items():
            if key in own or not key.endswith('.weight'):
                continue
            stem = key[:-len('weight')]
            base = stem + 'token_adapter.base_layer.weight'
            adapter = modules.get(stem + 'token_adapter')
            if base not in own or adapter is None:
                continue
            del out[key]
            out[base] = value
            if value.shape != own[base].shape:
                continue  # reported as mis-shaped by the caller
            for name, rows in adapter.token_indices.items():
                out[f'{stem}token_adapter.trainable_tokens_delta.{name}'] = value[rows]
        return out

    def merge_and_export(self, save_path: str) -> Dict[str, Tensor]:
        """Merge LoRA into the LLM (in place) and save one full checkpoint.

        The file (safetensors, written to a temporary name then renamed) holds
        every tensor of the model with the official layouts under their
        prefixes: ``mllm.*`` (InternVL keys), ``grounding_encoder.*`` (SAM2
        keys), ``text_hidden_fcs.*``; its metadata records the special
        tokens. Returns the saved state dict.
        """
        from safetensors.torch import save_file
        if hasattr(self.mllm.language_model, 'merge_and_unload'):
            self.mllm.merge_llm_lora()
        state = {k: v.detach().cpu().contiguous()
                 for k, v in self.state_dict(trainable_only=False).items()}
        tied = self.mllm.get_output_embeddings()
        if tied is not None and tied.weight is self.mllm.get_input_embeddings().weight:
            state.pop('mllm.language_model.lm_head.weight', None)
        tmp = f'{save_path}.tmp'
        save_file(state, tmp, metadata={'special_tokens': ' '.join(self.special_tokens),
                                        'format': 'sa2va-merged'})
        os.replace(tmp, save_path)
        return state

    def init_weights(self) -> None:
        """No-op: every weight is set at build time (checkpoints or seeded
        init). mmengine's runner calls this before training; letting it reach
        the transformers model would re-initialise the fresh LoRA adapters
        (``lora_B`` must stay zero)."""

    # -------------------------------------------------------------- forward
    def forward(self, input_ids: Tensor, labels: Optional[Tensor] = None,
                attention_mask: Optional[Tensor] = None,
                position_ids: Optional[Tensor] = None,
                pixel_values: Optional[Tensor] = None,
                image_flags: Optional[Tensor] = None,
                vp_overall_mask: Optional[Tensor] = None,
                prompt_masks: Optional[Sequence[Tensor]] = None,
                g_pixel_values: Union[None, Tensor, Sequence[Tensor]] = None,
                frames_per_batch: Optional[Sequence[int]] = None,
                masks: Optional[Sequence[Tensor]] = None,
                grounding_index: Optional[Sequence[int]] = None,
                ori_sizes: Optional[Sequence[Tuple[int, int]]] = None,
                image_grid_thw: Optional[Tensor] = None,
                pixel_values_videos: Optional[Tensor] = None,
                video_grid_thw: Optional[Tensor] = None,
                second_per_grid_ts: Optional[Tensor] = None,
                data_samples=None, mode: str = 'loss', **kwargs):
        """Forward of a collated, pre-processed batch.

        Args:
            input_ids: ``(B, L)`` long; ``[SEG]`` ids mark mask prompts.
            labels: ``(B, L)`` long, -100 ignored (needed for 'loss').
            attention_mask, position_ids: ``(B, L)``.
            pixel_values: ``(N, 3, 448, 448)`` float normalised tiles;
                image_flags ``(N,)``; vp_overall_mask ``(N,)`` bool;
                prompt_masks list of ``(n_obj, 16, 16)`` bool.
            g_pixel_values: ``(F, 3, S, S)`` float SAM2-normalised frames (or
                the raw list of ``(3, S, S)`` uint8, normalised here), the
                frames of grounding sample 0 first.
            frames_per_batch: frames per grounding sample (1 for an image).
            masks: GT per grounding sample, ``(n_obj * T, H, W)`` {0, 1},
                object-major.
            grounding_index: batch row of each grounding sample; default: the
                rows that contain ``[SEG]``, in order.
            ori_sizes: ``(H, W)`` per grounding sample for 'predict' when no
                ``masks`` are given.
            image_grid_thw: ``(n_images, 3) long`` for a Qwen-VL MLLM
                (``QwenVLChat``: ``pixel_values`` are then its flattened
                patches, prompt_masks ``(n_obj, gh, gw)`` on each image's
                merged grid); None for InternVL.
            pixel_values_videos, video_grid_thw, second_per_grid_ts: a
                Qwen-VL native video batch (``QwenVLVideoInput(video_mode=
                'temporal_pairs')``), passed to ``QwenVLChat``; None otherwise.
            mode: 'loss' -> dict of losses and counters; 'predict' -> list
                (one per grounding sample) of dicts with ``pred_masks
                (n_obj, T, H, W) bool`` at the original size and
                ``pred_logits (n_obj, T, h, w)`` low-res; 'tensor' -> the
                low-res logits ``(R, 1, h, w)`` (R = sum n_obj * T) or None.
        """
        unknown = set(kwargs) - set(_IGNORED_KEYS)
        if unknown & set(_OPTION_A_KEYS) or (
                prompt_masks and any(m is None for m in prompt_masks)):
            raise ValueError('the batch has option-A mask <-> caption samples '
                             'whose tiles / prompt grids are not derived yet: '
                             'pass it through the data preprocessor '
                             '(Sa2VADataPreprocessor) first')
        if unknown:
            raise TypeError(f'Sa2VAModel.forward got unexpected keys {sorted(unknown)}')
        if mode not in ('loss', 'predict', 'tensor'):
            raise ValueError(f'unknown mode {mode!r}')
        if mode == 'loss' and labels is None:
            raise ValueError("mode='loss' needs labels")
        if mode == 'loss' and not bool((labels[:, 1:] != IGNORE_INDEX).any()):
            raise ValueError('the batch has no supervised token (every label is '
                             f'{IGNORE_INDEX} after the shift): the LM loss is undefined')
        out = self.mllm(input_ids=input_ids, pixel_values=pixel_values,
                        attention_mask=attention_mask, position_ids=position_ids,
                        image_flags=image_flags, labels=labels if mode == 'loss' else None,
                        prompt_masks=prompt_masks or None,
                        vp_overall_mask=vp_overall_mask if prompt_masks else None,
                        output_hidden_states=True, use_cache=False,
                        **{k: v for k, v in (('image_grid_thw', image_grid_thw),
                                             ('pixel_values_videos', pixel_values_videos),
                                             ('video_grid_thw', video_grid_thw),
                                             ('second_per_grid_ts', second_per_grid_ts))
                           if v is not None})
        hidden = out.hidden_states[-1]
        has_masks = bool(masks) or bool(frames_per_batch)
        if has_masks:
            pred, gt, stats = self._predict_masks(
                hidden, input_ids, g_pixel_values, frames_per_batch, masks,
                grounding_index, need_gt=mode == 'loss')
        else:
            self._check_no_seg(input_ids)
            pred, gt, stats = None, None, Counter(objects=[])
        if mode == 'tensor':
            return pred
        if mode == 'predict':
            return self._split_predictions(pred, stats['objects'], frames_per_batch,
                                           masks, ori_sizes)

        losses = {'loss_llm': out.loss * self.llm_loss_weight}
        if pred is not None:
            losses.update(self._mask_losses(pred[:, 0], gt))
        else:
            zero = self._zero_grounding_path(hidden)
            losses.update(loss_mask=zero, loss_dice=zero.clone())
        vision_guard = self._zero_vision_path(image_flags, pixel_values)
        if vision_guard is not None:
            losses['loss_llm'] = losses['loss_llm'] + vision_guard
        if self.fix_objects is not None:
            device = hidden.device
            losses['objects_repeated'] = torch.tensor(float(stats['repeated']), device=device)
            losses['objects_sampled'] = torch.tensor(float(stats['sampled']), device=device)
        return losses

    # ----------------------------------------------------------- [SEG] path
    def _check_no_seg(self, input_ids: Tensor) -> None:
        rows = torch.nonzero((input_ids == self.seg_token_id).any(1)).flatten().tolist()
        if rows:
            raise ValueError(f'batch rows {rows} contain {SEG_TOKEN} but the batch has '
                             f'no GT masks / SAM2 frames')

    def _grounding_rows(self, seg_counts: List[int], n_samples: int,
                        grounding_index: Optional[Sequence[int]]) -> List[int]:
        """Batch row of each grounding sample, checked against [SEG] use."""
        with_seg = [i for i, c in enumerate(seg_counts) if c > 0]
        if grounding_index is None:
            if len(with_seg) != n_samples:
                raise ValueError(
                    f'{n_samples} grounding samples (masks / frames_per_batch) but '
                    f'{len(with_seg)} batch rows contain {SEG_TOKEN} (rows {with_seg}, '
                    f'counts {[seg_counts[i] for i in with_seg]}); pass grounding_index '
                    f'to map samples to rows')
            return with_seg
        rows = [int(r) for r in grounding_index]
        if len(rows) != n_samples:
            raise ValueError(f'grounding_index has {len(rows)} rows for {n_samples} '
                             f'grounding samples')
        stray = sorted(set(with_seg) - set(rows))
        if stray:
            raise ValueError(f'batch rows {stray} contain {SEG_TOKEN} but are not '
                             f'grounding samples')
        return rows

    def _object_index(self, n_obj: int, sample: int, stats: Counter) -> Optional[Tensor]:
        """Sa2VA's fixed object count: indices into a sample's objects."""
        n = self.fix_objects
        if n is None or n_obj == n:
            return None
        if n_obj < n:
            stats['repeated'] += 1
            idx = torch.arange(n) % n_obj
        else:
            stats['sampled'] += 1
            idx = torch.randperm(n_obj)[:n]
        print_log(f'grounding sample {sample}: {n_obj} objects -> {n} '
                  f'(fix_objects)', logger='current', level=logging.DEBUG)
        return idx

    def _predict_masks(self, hidden: Tensor, input_ids: Tensor, g_pixel_values,
                       frames_per_batch, masks, grounding_index,
                       need_gt: bool) -> Tuple[Tensor, Optional[Tensor], Counter]:
        """Low-res mask logits ``(R, 1, h, w)`` for every (object, frame) of
        every grounding sample, object-major per sample, and the GT resized
        to ``(R, h, w)`` float (None without ``need_gt``)."""
        frames = [int(t) for t in (frames_per_batch or [])]
        masks = list(masks or [])
        if need_gt and len(masks) != len(frames):
            raise ValueError(f'{len(masks)} GT mask tensors for {len(frames)} grounding '
                             f'samples (frames_per_batch {frames})')
        if not frames:
            raise ValueError('masks given without frames_per_batch')
        images = self._sam2_images(g_pixel_values)
        if images.shape[0] != sum(frames):
            raise ValueError(f'{images.shape[0]} SAM2 frames but frames_per_batch '
                             f'{frames} sums to {sum(frames)}')
        seg = input_ids == self.seg_token_id
        seg_counts = seg.sum(1).tolist()
        rows = self._grounding_rows(seg_counts, len(frames), grounding_index)
        fcs_dtype = self.text_hidden_fcs[0].weight.dtype
        seg_embeds = self.text_hidden_fcs(hidden[seg].to(fcs_dtype))
        per_row = dict(zip(range(len(seg_counts)), seg_embeds.split(seg_counts)))

        size = self.low_res_size
        prompts, image_index, gts = [], [], []
        stats: Counter = Counter(objects=[])
        offset = 0
        for i, (row, t) in enumerate(zip(rows, frames)):
            emb = per_row[row]
            if need_gt:
                m = masks[i]
                if m.ndim != 3 or m.shape[0] % t:
                    raise ValueError(f'grounding sample {i} (batch row {row}): masks '
                                     f'{tuple(m.shape)} is not (n_obj * {t}, H, W)')
                n_obj = m.shape[0] // t
                if emb.shape[0] != n_obj:
                    raise ValueError(
                        f'grounding sample {i} (batch row {row}): {emb.shape[0]} '
                        f'{SEG_TOKEN} tokens but {n_obj} GT objects ({m.shape[0]} masks '
                        f'over {t} frames)')
                m = m.reshape(n_obj, t, *m.shape[-2:])
            idx = self._object_index(emb.shape[0], i, stats)
            if idx is not None:
                emb = emb[idx.to(emb.device)]
                if need_gt:
                    m = m[idx.to(m.device)]
            k = emb.shape[0]
            stats['objects'].append(k)
            prompts.append(emb.repeat_interleave(t, dim=0))
            image_index.append(offset + torch.arange(t).repeat(k))
            if need_gt:
                gts.append(resize_gt_masks(m.reshape(k * t, *m.shape[-2:]), size))
            offset += t
        prompts = torch.cat(prompts)
        index = torch.cat(image_index).to(images.device)
        if prompts.shape[0] == 0:
            raise ValueError('grounding samples without any object')
        pred = self._language_masks(images, prompts, index)
        gt = torch.cat(gts).to(pred.device) if need_gt else None
        return pred, gt, stats

    def _language_masks(self, images: Tensor, prompts: Tensor, index: Tensor) -> Tensor:
        """SAM2 low-res mask logits ``(R, 1, h, w)`` for prompt rows ``(R, C)``
        on frames ``images[index]`` (``images (F, 3, S, S)``)."""
        backbone = self._encode_sam2(images)
        sam_dtype = self.grounding_encoder.no_mem_embed.dtype
        out = self.grounding_encoder.forward_language_prompt(
            backbone, prompts[:, None].to(sam_dtype), image_index=index)
        return out['low_res_masks']

    def _sam2_images(self, g_pixel_values) -> Tensor:
        """``(F, 3, S, S)`` normalised frames in the SAM2 encoder's dtype."""
        if g_pixel_values is None or (isinstance(g_pixel_values, (list, tuple))
                                      and not g_pixel_values):
            raise ValueError('grounding samples need g_pixel_values')
        if isinstance(g_pixel_values, (list, tuple)):
            g_pixel_values = torch.stack(list(g_pixel_values))
        if g_pixel_values.dtype == torch.uint8:
            g_pixel_values = normalize_sam2_images(g_pixel_values)
        s = self.grounding_encoder.image_size
        if tuple(g_pixel_values.shape[1:]) != (3, s, s):
            raise ValueError(f'SAM2 frames are {tuple(g_pixel_values.shape[1:])} but the '
                             f'grounding encoder takes (3, {s}, {s}); set the '
                             f'pipeline\'s SAM2Input(size={s})')
        dtype = next(self.grounding_encoder.image_encoder.parameters()).dtype
        return g_pixel_values.to(dtype)

    def _encode_sam2(self, images: Tensor) -> Dict[str, object]:
        """SAM2 ``forward_image`` with the image encoder run without autograd
        when it is frozen (the high-res projections ``conv_s0`` / ``conv_s1``,
        part of the trainable mask decoder, keep their gradient)."""
        sam2 = self.grounding_encoder
        encoder_trains = any(p.requires_grad for p in sam2.image_encoder.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and encoder_trains):
            out = sam2.image_encoder(images)
        if sam2.use_high_res_features_in_sam:
            fpn = list(out['backbone_fpn'])
            fpn[0] = sam2.sam_mask_decoder.conv_s0(fpn[0])
            fpn[1] = sam2.sam_mask_decoder.conv_s1(fpn[1])
            out['backbone_fpn'] = fpn
        return out

    # --------------------------------------------------------------- losses
    def _mask_losses(self, pred: Tensor, gt: Tensor) -> Dict[str, Tensor]:
        """BCE and Dice of ``pred (R, h, w)`` logits vs ``gt (R, h, w)``."""
        if self.num_points is None:
            p, t = pred.float(), gt.float()
        else:
            p, t = sample_mask_points(pred, gt, self.num_points, self.oversample_ratio,
                                      self.importance_sample_ratio)
        return {'loss_mask': self.loss_mask(p, t), 'loss_dice': self.loss_dice(p, t)}

    def _zero_grounding_path(self, hidden: Tensor) -> Tensor:
        """0 x (text_hidden_fcs of one hidden state + every trainable SAM2
        parameter): a batch without masks still gives text_hidden_fcs and
        the mask decoder a (zero) gradient, so DDP without
        ``find_unused_parameters`` and ZeRO see the same parameters in every
        step. Cheaper than Sa2VA v1's SAM2 pass on a random image."""
        fcs_dtype = self.text_hidden_fcs[0].weight.dtype
        terms = [self.text_hidden_fcs(hidden[:1, :1].to(fcs_dtype)).float().sum()]
        terms += [p.float().sum() for p in self.grounding_encoder.parameters()
                  if p.requires_grad]
        return torch.stack(terms).sum() * 0.0

    def _zero_vision_path(self, image_flags: Optional[Tensor],
                          pixel_values: Optional[Tensor]) -> Optional[Tensor]:
        """0 x the trainable vision-side parameters when no tile of the batch
        is kept (text-only batch: the dummy tiles' rows are never spliced, so
        mlp1 would get no gradient; a Qwen-VL text-only batch has no
        ``pixel_values`` at all); None otherwise."""
        if pixel_values is not None and (image_flags is None
                                         or bool((image_flags == 1).any())):
            return None
        params = [p for m in (self.mllm.vision_model, self.mllm.mlp1)
                  for p in m.parameters() if p.requires_grad]
        if not params:
            return None
        return torch.stack([p.float().sum() for p in params]).sum() * 0.0

    # ------------------------------------------------------------- predict
    @torch.no_grad()
    def generate_masks(self, input_ids: Tensor, g_pixel_values, ori_size: Tuple[int, int],
                       pixel_values: Optional[Tensor] = None,
                       image_flags: Optional[Tensor] = None,
                       vp_overall_mask: Optional[Tensor] = None,
                       prompt_masks: Optional[Sequence[Tensor]] = None,
                       **generate_kwargs) -> Dict[str, Tensor]:
        """Answer one prompt and segment every ``[SEG]`` the answer contains.

        Args:
            input_ids: ``(1, L)`` long, the prompt (one sample).
            g_pixel_values: the sample's T SAM2 frames, ``(T, 3, S, S)``
                normalised float (or uint8, normalised here).
            ori_size: ``(H, W)`` of the output masks.
            pixel_values, image_flags, vp_overall_mask, prompt_masks: the
                vision inputs as in :meth:`forward`.
            **generate_kwargs: for the LLM's ``generate`` (``max_new_tokens``,
                ``eos_token_id``, ``do_sample`` ...).

        Returns:
            dict with ``sequences (n_new,)`` long (the generated ids),
            ``pred_logits (k, T, h, w)`` and ``pred_masks (k, T, H, W)`` bool
            (logits upsampled bilinear, > 0) for the k generated ``[SEG]``
            (k may be 0). The hidden state of a ``[SEG]`` is the last layer's
            output at the step that reads it back as input, as in training;
            a ``[SEG]`` that is the very last generated token (generation cut
            by ``max_new_tokens``) is never read back and raises.
        """
        if input_ids.shape[0] != 1:
            raise ValueError(f'generate_masks takes one sample, got a batch of '
                             f'{input_ids.shape[0]}')
        gen = self.mllm.generate(
            input_ids=input_ids, pixel_values=pixel_values, image_flags=image_flags,
            vp_overall_mask=vp_overall_mask, prompt_masks=prompt_masks or None,
            output_hidden_states=True, return_dict_in_generate=True, **generate_kwargs)
        seq = gen.sequences[0]
        # hidden_states[0] covers the prompt; hidden_states[i] (i >= 1) is the
        # pass that reads generated token i - 1.
        steps = [h[-1][0, -1] for h in gen.hidden_states[1:]]
        seg_pos = [i for i in range(len(steps)) if int(seq[i]) == self.seg_token_id]
        if len(seq) > len(steps) and int(seq[-1]) == self.seg_token_id:
            raise ValueError('the last generated token is [SEG] (generation stopped by '
                             'max_new_tokens): it has no hidden state; allow more tokens')
        images = self._sam2_images(g_pixel_values)
        t = images.shape[0]
        h, w = self.low_res_size
        if not seg_pos:
            return dict(sequences=seq, pred_logits=images.new_zeros(0, t, h, w),
                        pred_masks=torch.zeros(0, t, *ori_size, dtype=torch.bool,
                                               device=images.device))
        hidden = torch.stack([steps[i] for i in seg_pos])
        fcs_dtype = self.text_hidden_fcs[0].weight.dtype
        prompts = self.text_hidden_fcs(hidden.to(fcs_dtype)).repeat_interleave(t, dim=0)
        index = torch.arange(t, device=images.device).repeat(len(seg_pos))
        logits = self._language_masks(images, prompts, index)
        full = F.interpolate(logits.float(), size=tuple(ori_size), mode='bilinear',
                             align_corners=False)[:, 0]
        k = len(seg_pos)
        return dict(sequences=seq, pred_logits=logits[:, 0].reshape(k, t, h, w),
                    pred_masks=(full > 0).reshape(k, t, *ori_size))

    def _split_predictions(self, pred: Optional[Tensor], n_objs: List[int],
                           frames_per_batch, masks, ori_sizes) -> List[Dict[str, Tensor]]:
        """Per grounding sample: logits ``(n_obj, T, h, w)`` and boolean masks
        at the original size (bilinear upsampling of the logits, > 0)."""
        if pred is None:
            return []
        results, start = [], 0
        frames = [int(t) for t in frames_per_batch]
        for i, (t, k) in enumerate(zip(frames, n_objs)):
            logits = pred[start:start + k * t, 0]
            start += k * t
            if masks:
                size = tuple(masks[i].shape[-2:])
            elif ori_sizes is not None:
                size = tuple(ori_sizes[i])
            else:
                size = tuple(logits.shape[-2:])
            full = F.interpolate(logits[:, None].float(), size=size, mode='bilinear',
                                 align_corners=False)[:, 0]
            results.append(dict(pred_logits=logits.reshape(k, t, *logits.shape[-2:]),
                                pred_masks=(full > 0).reshape(k, t, *size)))
        return results

    @torch.no_grad()
    def generate_masks_and_prompts(self, input_ids: Tensor, g_pixel_values,
                                   ori_size: Tuple[int, int],
                                   **kwargs) -> Dict[str, Tensor]:
        """:meth:`generate_masks` plus the SAM2 prompt embeddings of the
        answer's ``[SEG]`` tokens (e.g. to prompt SAM2's video memory path on
        more frames).

        Args: as :meth:`generate_masks` (``**kwargs``: its vision inputs and
        the ``generate`` settings).

        Returns:
            :meth:`generate_masks`' dict plus ``seg_prompts (k, C)``: the
            ``text_hidden_fcs`` output of the k generated ``[SEG]`` in answer
            order (``C`` = the grounding encoder's ``hidden_dim``, dtype of
            ``text_hidden_fcs``), the very rows the masks were decoded from
            (read from :meth:`generate_masks`' own call of
            ``text_hidden_fcs``; no second pass). ``(0, C)`` when the answer
            has no ``[SEG]``.
        """
        seen: List[Tensor] = []
        handle = self.text_hidden_fcs.register_forward_hook(
            lambda module, args, output: seen.append(output))
        try:
            out = self.generate_masks(input_ids, g_pixel_values, ori_size, **kwargs)
        finally:
            handle.remove()
        k = out['pred_masks'].shape[0]
        if len(seen) > 1:
            raise RuntimeError(f'text_hidden_fcs ran {len(seen)} times in one '
                               f'generate_masks call; expected at most once')
        if seen:
            prompts = seen[0]
        else:
            last = self.text_hidden_fcs[2]
            prompts = last.weight.new_zeros(0, last.out_features)
        if prompts.shape[0] != k:
            raise RuntimeError(f'{prompts.shape[0]} prompt rows for {k} [SEG] masks')
        out['seg_prompts'] = prompts
        return out
