"""Qwen2.5-VL / Qwen3-VL as Sa2VA's MLLM, from transformers' own classes.

``dict(type='QwenVLChat', model_path=... | config=dict(model_type='qwen2_5_vl'
| 'qwen3_vl', ...))`` builds ``Qwen2_5_VLForConditionalGeneration`` /
``Qwen3VLForConditionalGeneration`` (transformers >= 4.57 for Qwen3-VL; the
legacy stack has neither and raises naming the need) behind the interface
:class:`~projects.sa2va.models.Sa2VAModel` uses for InternVL:

    input_ids (B, L) ── token embeddings; ``<|image_pad|>`` positions of
        ``<|vision_start|>...<|vision_end|>`` blocks <- the image's merged visual tokens
        (``visual`` incl. its merger, one block of gh * gw rows per image),
        ``<vp>`` blocks <- the rows a region's mask selects from its image's
        block (boolean indexing, ``merge_vision_embeddings``)
    ── multimodal rotary position ids from the model's own ``get_rope_index``
        (image-block tokens are the image modality; ``<vp>`` rows are text
        positions) ── text decoder (Qwen3-VL: deepstack features added at the
        image-block positions) ── last hidden state (B, L, D), lm_head logits,
        the causal-LM loss of transformers (``loss_function``).

Image-side inputs: ``pixel_values (n_patches, 3 * 2 * p * p)`` float (the
processor's flattened patches, :class:`~projects.sa2va.transforms.qwen_vl.
QwenVLImageInput`), ``image_grid_thw (n_images, 3) long``, ``image_flags
(n_images,)`` (0: a dummy image, encoded but not spliced), ``vp_overall_mask
(n_images,) bool``, ``prompt_masks``: ``(n_obj, gh_i, gw_i) bool`` per
prompted image. Parameter names: ``model.*`` = the transformers model
(``model.model.visual.*``, ``model.model.language_model.*``,
``model.lm_head.*``; under ``model.base_model.model.`` while LoRA wraps it).
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from ..constants import IMAGE_TOKENS
from ..registry import MODELS
from .dtypes import as_dtype, default_dtype
from ..transforms.qwen_vl_video import QWEN_VIDEO_TOKENS
from .internvl.visual_prompt import merge_vision_embeddings

#: model_type -> transformers class name.
QWEN_VL_CLASSES = {'qwen2_5_vl': 'Qwen2_5_VLForConditionalGeneration',
                   'qwen3_vl': 'Qwen3VLForConditionalGeneration'}
#: LoRA targets: the linears of the text decoder only (vision untouched).
QWEN_VL_LORA_TARGETS = (r'.*language_model\.layers\.\d+\.'
                        r'(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)')


def qwen_vl_class(model_type: str):
    """The transformers class of a Qwen-VL ``model_type``; raises naming the
    transformers version when the installed one lacks it."""
    import transformers
    if model_type not in QWEN_VL_CLASSES:
        raise ValueError(f'unknown Qwen-VL model_type {model_type!r}; one of '
                         f'{sorted(QWEN_VL_CLASSES)}')
    cls = getattr(transformers, QWEN_VL_CLASSES[model_type], None)
    if cls is None:
        raise ImportError(f'{QWEN_VL_CLASSES[model_type]} needs transformers >= 4.57 '
                          f'(installed {transformers.__version__}): use the current '
                          f'stack (.venv-current)')
    return cls


@MODELS.register_module()
class QwenVLChat(nn.Module):
    """A Qwen-VL model with InternVLChat's Sa2VA interface.

    Args:
        model_path: a Qwen-VL checkpoint directory (official layout).
        config: instead, a config dict (``model_type`` + the transformers
            config fields; weights seeded-random), e.g.
            :func:`tiny_qwen_vl_config`.
        tokenizer: the Sa2VA tokenizer (Qwen's + Sa2VA's tokens; its
            ``<|vision_start|>``, ``<|vision_end|>``, ``<|image_pad|>``
            become the model's vision start / image tokens; the embeddings
            grow once to ``len(tokenizer)``).
        torch_dtype: weights dtype.
        freeze_vision: freeze ``visual`` except its merger(s) (the projector,
            InternVL's ``mlp1``); freeze_mlp1: freeze the merger(s) too;
            freeze_llm: freeze the text decoder, embeddings and lm_head.
        gradient_checkpointing: enable it on the transformers model.
    """

    def __init__(self, model_path: Optional[str] = None, config: Optional[dict] = None,
                 tokenizer=None, torch_dtype=None, freeze_vision: bool = False,
                 freeze_llm: bool = False, freeze_mlp1: bool = False,
                 gradient_checkpointing: bool = False):
        super().__init__()
        if (model_path is None) == (config is None):
            raise ValueError('QwenVLChat needs exactly one of model_path and config')
        if model_path is not None:
            self.model, model_type = load_qwen_vl_checkpoint(model_path, as_dtype(torch_dtype))
        else:
            from transformers import AutoConfig
            config = dict(config)
            model_type = config.pop('model_type', None)
            cls = qwen_vl_class(model_type)
            dtype = as_dtype(torch_dtype)
            # parameters created in the target dtype (the pretrained_hf path
            # builds full size from a config: fp32 then cast doubles the peak)
            with default_dtype(dtype):
                self.model = cls(AutoConfig.for_model(model_type, **config))
            if dtype not in (None, 'auto'):
                self.model.to(dtype)
        self.model_type = model_type
        if gradient_checkpointing:
            from ..compat import enable_activation_checkpointing
            enable_activation_checkpointing(self.model)
        self.image_token_id = self.vision_start_id = self.vision_end_id = None
        self.video_token_id = None
        if tokenizer is not None:
            self.prepare_for_tokenizer(tokenizer)
        self.freeze(vision=freeze_vision, llm=freeze_llm, mlp1=freeze_mlp1)

    # --------------------------------------------------------------- parts
    @property
    def hf_model(self):
        """The transformers ``*ForConditionalGeneration`` (under LoRA: the
        peft base model, whose layers hold the adapters)."""
        m = self.model
        return m.get_base_model() if hasattr(m, 'get_base_model') else m

    @property
    def language_model(self):
        """What LoRA wraps: the whole transformers model (targets restricted
        to the text decoder by ``QWEN_VL_LORA_TARGETS``)."""
        return self.model

    @property
    def vision_model(self) -> nn.Module:
        return self.hf_model.model.visual

    @property
    def mlp1(self) -> nn.ModuleList:
        """The projector(s): ``visual.merger`` (+ Qwen3-VL's deepstack mergers)."""
        visual = self.vision_model
        mods = [visual.merger] + list(getattr(visual, 'deepstack_merger_list', []))
        return nn.ModuleList(mods)

    @property
    def config(self):
        return self.hf_model.config

    @property
    def llm_hidden_size(self) -> int:
        return self.config.text_config.hidden_size

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def get_output_embeddings(self) -> Optional[nn.Module]:
        return self.model.get_output_embeddings()

    # -------------------------------------------------------- tokens, freeze
    def prepare_for_tokenizer(self, tokenizer) -> List[int]:
        """Adopt the Sa2VA tokenizer (Qwen's tokenizer + Sa2VA's tokens): its
        ``<|vision_start|>`` / ``<|vision_end|>`` / ``<|image_pad|>`` ids
        (``IMAGE_TOKENS['qwen_vl']``, the strings the data path writes with
        ``image_tokens='qwen_vl'``) become ``vision_start_token_id`` / the
        image block end / ``image_token_id``; the input embedding and lm_head
        get exactly ``len(tokenizer)`` rows, as the official Sa2VA-Qwen code
        resizes them (a Qwen checkpoint's padded rows beyond the tokenizer are
        dropped, so the loss's softmax runs over the tokenizer's ids only).
        Returns the row ids added (none when rows were dropped or kept).

        Raises:
            ValueError: the tokenizer lacks one of them (e.g. an InternVL
                tokenizer).
        """
        start, ctx, end = IMAGE_TOKENS['qwen_vl']
        ids = {}
        for tok in (start, end, ctx):
            ids[tok] = tokenizer.convert_tokens_to_ids(tok)
            if ids[tok] is None or ids[tok] == tokenizer.unk_token_id or \
                    len(tokenizer.encode(tok, add_special_tokens=False)) != 1:
                raise ValueError(f'tokenizer has no {tok} token (a Qwen-VL '
                                 f'backbone needs the Qwen-VL tokenizer)')
        self.vision_start_id, self.vision_end_id, self.image_token_id = (
            ids[start], ids[end], ids[ctx])
        self.config.image_token_id = self.image_token_id
        self.config.vision_start_token_id = self.vision_start_id
        video = tokenizer.convert_tokens_to_ids(QWEN_VIDEO_TOKENS[1])
        self.video_token_id = None if video in (None, tokenizer.unk_token_id) else video
        if self.video_token_id is not None:
            self.config.video_token_id = self.video_token_id
        old = self.get_input_embeddings().num_embeddings
        new = len(tokenizer)
        if new != old:
            # the official Sa2VA-Qwen rule: resize_token_embeddings(len(tokenizer))
            # after adding its tokens, so the Qwen checkpoints' padded rows
            # (151936 / 152064 -> 151670 / 151674) leave the softmax
            self.model.resize_token_embeddings(new)
        return list(range(old, new))

    def freeze(self, vision: bool = False, llm: bool = False, mlp1: bool = False) -> None:
        """``requires_grad=False`` on the chosen parts (True = freeze)."""
        merger_ids = {id(p) for p in self.mlp1.parameters()}
        for p in self.vision_model.parameters():
            if (vision and id(p) not in merger_ids) or (mlp1 and id(p) in merger_ids):
                p.requires_grad_(False)
        if llm:
            self.hf_model.model.language_model.requires_grad_(False)
            self.hf_model.lm_head.requires_grad_(False)

    def wrap_llm_lora(self, r: int = 128, lora_alpha: int = 256, lora_dropout: float = 0.05,
                      target_modules: Union[None, str, Sequence[str]] = None,
                      trainable_token_indices: Optional[Dict[str, List[int]]] = None) -> None:
        """peft LoRA on the text decoder's linears (``QWEN_VL_LORA_TARGETS``)
        plus the trainable token rows given (``{'embed_tokens': ids}``); the
        vision tower's ``requires_grad`` flags are kept as they were."""
        from peft import LoraConfig, get_peft_model
        if hasattr(self.model, 'merge_and_unload'):
            raise ValueError('the model is already LoRA-wrapped')
        cfg = LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                         target_modules=target_modules or QWEN_VL_LORA_TARGETS,
                         task_type='CAUSAL_LM',
                         trainable_token_indices=trainable_token_indices or None)
        # peft freezes every non-adapter weight of what it wraps: the vision
        # side keeps its own setting (a trainable merger stays trainable).
        vision = [(p, p.requires_grad) for p in self.vision_model.parameters()]
        self.model = get_peft_model(self.model, cfg)
        for p, flag in vision:
            p.requires_grad_(flag)

    def merge_llm_lora(self) -> None:
        """Merge the adapters into the weights and drop the peft wrapper."""
        self.model = self.model.merge_and_unload()

    # -------------------------------------------------------------- forward
    def _image_block_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(B, L) bool``: ``<|image_pad|>`` inside ``<|vision_start|> ...
        <|vision_end|>`` (not those of ``<vp>`` blocks)."""
        inside = (input_ids == self.vision_start_id).long().cumsum(1) \
            > (input_ids == self.vision_end_id).long().cumsum(1)
        return inside & (input_ids == self.image_token_id)

    def build_inputs(self, input_ids: torch.Tensor, pixel_values=None, image_grid_thw=None,
                     image_flags=None, vp_overall_mask=None, prompt_masks=None,
                     attention_mask=None, pixel_values_videos=None, video_grid_thw=None,
                     second_per_grid_ts=None) -> dict:
        """Spliced embeddings and position ids.

        Images: ``pixel_values (n_patches, 3 * 2 * p * p)``, ``image_grid_thw
        (n_images, 3)`` (a video in ``'frames'`` mode is one image per frame).
        Native video (``'temporal_pairs'``): ``pixel_values_videos
        (n_video_patches, 3 * 2 * p * p)``, ``video_grid_thw (n_videos, 3)``,
        Qwen2.5-VL ``second_per_grid_ts (n_videos,)`` float (rotary time
        step); every ``<|video_pad|>`` position takes the next video token
        (``get_video_features`` rows, in order).

        Returns:
            dict with ``inputs_embeds (B, L, D)``, ``position_ids (3, B, L)``
            (from ``get_rope_index``: image-block tokens are modality 1,
            ``<|video_pad|>`` 2, the rest text; 1-D positions repeated when
            the batch has neither), and for Qwen3-VL ``visual_pos_masks (B,
            L) bool`` / ``deepstack_visual_embeds`` (per deepstack layer
            ``(n_visual_tokens, D)`` in sequence order) when there are images
            or video.
        """
        if self.image_token_id is None:
            raise ValueError('call prepare_for_tokenizer() (or give tokenizer=) first')
        hf = self.hf_model
        embeds = self.get_input_embeddings()(input_ids)
        out: dict = {}
        block = self._image_block_mask(input_ids)
        deep_parts = []  # (positions (B, L) bool, per-layer features)
        if pixel_values is None:
            embeds = merge_vision_embeddings(embeds, input_ids, None, None, self.image_token_id,
                                             context_token=IMAGE_TOKENS['qwen_vl'][1])
            kept_grid = None
        else:
            if image_grid_thw is None:
                raise ValueError('pixel_values without image_grid_thw')
            vis = hf.model.get_image_features(pixel_values, image_grid_thw, return_dict=True)
            blocks = list(vis.pooler_output)
            if image_flags is None:
                image_flags = torch.ones(len(blocks), dtype=torch.long)
            embeds = merge_vision_embeddings(embeds, input_ids, blocks, image_flags,
                                             self.image_token_id, vp_overall_mask, prompt_masks,
                                             context_token=IMAGE_TOKENS['qwen_vl'][1])
            keep = image_flags.reshape(-1).cpu() == 1
            kept_grid = image_grid_thw[keep.to(image_grid_thw.device)]
            n_block = [int(b.shape[0]) for b, k in zip(blocks, keep.tolist()) if k]
            if int(block.sum()) != sum(n_block):
                raise ValueError(f'{int(block.sum())} <|image_pad|> positions inside image '
                                 f'blocks but the kept images have {sum(n_block)} tokens')
            if getattr(vis, 'deepstack_features', None):
                kept = keep.nonzero().flatten().tolist()
                deep_parts.append((block, [torch.cat([layer[i] for i in kept])
                                           for layer in vis.deepstack_features]))
        video = self._video_positions(input_ids, pixel_values_videos, video_grid_thw)
        if video is not None:
            vis = hf.model.get_video_features(pixel_values_videos, video_grid_thw,
                                              return_dict=True)
            feats = torch.cat(list(vis.pooler_output)).to(embeds.dtype)
            if int(video.sum()) != feats.shape[0]:
                raise ValueError(f'{int(video.sum())} <|video_pad|> positions but the videos '
                                 f'(video_grid_thw {video_grid_thw.tolist()}) have '
                                 f'{feats.shape[0]} tokens')
            embeds = embeds.masked_scatter(video[..., None].to(embeds.device), feats)
            if getattr(vis, 'deepstack_features', None):
                deep_parts.append((video, [torch.cat(list(layer))
                                           for layer in vis.deepstack_features]))
        if deep_parts:
            out['visual_pos_masks'], out['deepstack_visual_embeds'] = \
                self._joint_deepstack(deep_parts, embeds.dtype)
        out['inputs_embeds'] = embeds
        has_images = kept_grid is not None and kept_grid.shape[0] > 0
        if has_images or video is not None:
            types = block.int() + (2 * video.int() if video is not None else 0)
            extra = {} if second_per_grid_ts is None else dict(
                second_per_grid_ts=second_per_grid_ts.reshape(-1).tolist())
            out['position_ids'], _ = hf.model.get_rope_index(
                input_ids, mm_token_type_ids=types,
                image_grid_thw=kept_grid if has_images else None,
                video_grid_thw=video_grid_thw if video is not None else None,
                attention_mask=attention_mask, **extra)
        else:
            n = attention_mask.long().cumsum(1) - 1 if attention_mask is not None else \
                torch.arange(input_ids.shape[1], device=input_ids.device)[None].expand_as(input_ids)
            out['position_ids'] = n.clamp(min=0)[None].expand(3, -1, -1)
        return out

    def _video_positions(self, input_ids, pixel_values_videos, video_grid_thw):
        """``(B, L) bool`` of the ``<|video_pad|>`` positions, or None without
        video; raises when the inputs or the tokenizer cannot carry video."""
        if pixel_values_videos is None:
            if video_grid_thw is not None:
                raise ValueError('video_grid_thw without pixel_values_videos')
            if self.video_token_id is not None and bool((input_ids == self.video_token_id).any()):
                raise ValueError(f'the text has {QWEN_VIDEO_TOKENS[1]} tokens but no '
                                 f'pixel_values_videos were given (a pipeline step that drops '
                                 f'them, e.g. PackInputs keys?)')
            return None
        if video_grid_thw is None:
            raise ValueError('pixel_values_videos without video_grid_thw')
        if self.video_token_id is None:
            raise ValueError(f'video input but the tokenizer has no {QWEN_VIDEO_TOKENS[1]} '
                             f'token (prepare_for_tokenizer)')
        return input_ids == self.video_token_id

    @staticmethod
    def _joint_deepstack(parts, dtype):
        """Qwen3-VL deepstack features of images and videos in sequence
        order: ``visual_pos_masks (B, L)`` (the union) and per layer ``(n,
        D)`` rows for its True positions."""
        union = parts[0][0]
        for mask, _ in parts[1:]:
            union = union | mask
        layers = []
        for i in range(len(parts[0][1])):
            feats = [f[i] for _, f in parts]
            joint = feats[0].new_zeros(int(union.sum()), feats[0].shape[-1])
            for (mask, _), f in zip(parts, feats):
                joint[mask[union]] = f.to(joint.dtype)
            layers.append(joint.to(dtype))
        return union, layers

    def forward(self, input_ids: torch.Tensor, pixel_values=None, attention_mask=None,
                position_ids=None, image_flags=None, labels=None, prompt_masks=None,
                vp_overall_mask=None, image_grid_thw=None, output_hidden_states=None,
                use_cache=None, pixel_values_videos=None, video_grid_thw=None,
                second_per_grid_ts=None, **kwargs) -> CausalLMOutputWithPast:
        """Training / scoring forward.

        ``position_ids`` from the collate (1-D) are replaced by the
        multimodal ones (:meth:`build_inputs`, which also takes the video
        inputs). Returns ``loss`` (scalar,
        with labels: transformers' causal-LM loss), ``logits (B, L, V)``,
        ``hidden_states = (last hidden state (B, L, D),)``.
        """
        if kwargs:
            raise TypeError(f'QwenVLChat.forward got unexpected keys {sorted(kwargs)}')
        if attention_mask is not None:
            attention_mask = attention_mask.long()
        inputs = self.build_inputs(input_ids, pixel_values, image_grid_thw, image_flags,
                                   vp_overall_mask, prompt_masks, attention_mask,
                                   pixel_values_videos, video_grid_thw, second_per_grid_ts)
        hf = self.hf_model
        text = hf.model.language_model(attention_mask=attention_mask, use_cache=False,
                                       **inputs)
        hidden = text.last_hidden_state
        logits = hf.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = hf.loss_function(logits=logits, labels=labels,
                                    vocab_size=logits.shape[-1])
        return CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=(hidden,))

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, pixel_values=None, image_grid_thw=None,
                 image_flags=None, vp_overall_mask=None, prompt_masks=None,
                 max_new_tokens: int = 32, eos_token_id=None, do_sample: bool = False,
                 pixel_values_videos=None, video_grid_thw=None, second_per_grid_ts=None,
                 **unused_generate_kwargs) -> SimpleNamespace:
        """Greedy decoding with a KV cache from the spliced prompt.

        The prompt pass uses :meth:`build_inputs` (multimodal rotary ids,
        ``<vp>`` rows, deepstack); each new token is a text position one
        past the largest position so far (what ``get_rope_index`` gives a
        text token).

        Args:
            input_ids: ``(1, L)`` long, one prompt.
            pixel_values ... second_per_grid_ts: as in :meth:`build_inputs`.
            max_new_tokens, eos_token_id (int or list): stopping rule.
            do_sample: only False (greedy) is supported; True raises.

        Returns:
            namespace with ``sequences (1, n_new)`` long (new tokens only)
            and ``hidden_states``: per pass (prompt, then one per new token
            read back) a 1-tuple holding the last hidden state ``(1, l, D)``
            (``Sa2VAModel.generate_masks`` reads ``h[-1][0, -1]``).
        """
        from transformers import DynamicCache
        from ..compat import cache_kwargs
        if do_sample:
            raise ValueError('QwenVLChat.generate is greedy only (do_sample=False)')
        if input_ids.shape[0] != 1:
            raise ValueError(f'generate takes one prompt, got {input_ids.shape[0]}')
        stop = set() if eos_token_id is None else set(
            [eos_token_id] if isinstance(eos_token_id, int) else eos_token_id)
        hf = self.hf_model
        text_model = hf.model.language_model
        inputs = self.build_inputs(input_ids, pixel_values, image_grid_thw, image_flags,
                                   vp_overall_mask, prompt_masks, None, pixel_values_videos,
                                   video_grid_thw, second_per_grid_ts)
        cache = DynamicCache(config=hf.config.text_config)
        out = text_model(use_cache=True, **cache_kwargs(hf, cache), **inputs)
        next_pos = int(inputs['position_ids'].max()) + 1
        hidden_states, new = [(out.last_hidden_state,)], []
        for step in range(max_new_tokens):
            token = int(hf.lm_head(out.last_hidden_state[:, -1]).argmax(-1))
            new.append(token)
            if token in stop or step == max_new_tokens - 1:
                break
            ids = torch.tensor([[token]], device=input_ids.device)
            pos = torch.full((3, 1, 1), next_pos, dtype=torch.long, device=input_ids.device)
            next_pos += 1
            out = text_model(inputs_embeds=self.get_input_embeddings()(ids), position_ids=pos,
                             use_cache=True, **cache_kwargs(hf, cache))
            hidden_states.append((out.last_hidden_state,))
        return SimpleNamespace(sequences=torch.tensor([new], device=input_ids.device),
                               hidden_states=tuple(hidden_states))


def load_qwen_vl_checkpoint(model_path: str, dtype=None):
    """An official Qwen2.5-VL / Qwen3-VL checkpoint directory through
    transformers' ``from_pretrained`` (which renames the pre-4.52 keys
    ``visual.*`` / ``model.layers.*``), strictly.

    Returns:
        ``(model, model_type)``.

    Raises:
        ValueError: naming the directory and the keys, when a weight of the
            model is missing from the files (transformers would leave it
            randomly initialised with a warning), a file key fits no weight,
            or a shape differs.
    """
    from transformers import AutoConfig

    from ..compat import dtype_kwargs
    model_type = AutoConfig.from_pretrained(model_path).model_type
    # mismatched shapes are reported in ``info`` (and refused below) instead of
    # transformers' error that only points at its log
    model, info = qwen_vl_class(model_type).from_pretrained(
        model_path, output_loading_info=True, ignore_mismatched_sizes=True,
        **dtype_kwargs(dtype))
    problems = {k: sorted(info.get(k) or []) for k in
                ('missing_keys', 'unexpected_keys', 'mismatched_keys')}
    problems = {k: v for k, v in problems.items() if v}
    if problems:
        listed = '; '.join(f'{k} ({len(v)}): {", ".join(map(str, v[:8]))}'
                           + (' ...' if len(v) > 8 else '') for k, v in problems.items())
        raise ValueError(f'{model_path}: the checkpoint does not fit '
                         f'{QWEN_VL_CLASSES[model_type]}: {listed}')
    return model, model_type


def tiny_qwen_vl_config(model_type: str, vocab_size: int, hidden_size: int = 64) -> dict:
    """A tiny config dict for ``QwenVLChat(config=...)`` (tests, demo):
    2 text layers of width ``hidden_size`` (4 heads, head dim 16, mrope
    sections 2/3/3), a 2-block vision tower of width 32 with the backbone's
    patch size (14 / 16), 2 x 2 merge and frame pairs."""
    text = dict(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                head_dim=hidden_size // 4, tie_word_embeddings=False,
                rope_parameters=dict(rope_type='default', rope_theta=10000.0,
                                     mrope_section=[2, 3, 3]))
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                  out_hidden_size=hidden_size, spatial_merge_size=2, temporal_patch_size=2)
    if model_type == 'qwen2_5_vl':
        vision.update(patch_size=14, window_size=56, fullatt_block_indexes=[1])
    elif model_type == 'qwen3_vl':
        text['rope_parameters']['mrope_interleaved'] = True
        vision.update(patch_size=16, num_position_embeddings=64, deepstack_visual_indexes=[0])
    else:
        raise ValueError(f'unknown Qwen-VL model_type {model_type!r}')
    return dict(model_type=model_type, text_config=text, vision_config=vision,
                tie_word_embeddings=False)
