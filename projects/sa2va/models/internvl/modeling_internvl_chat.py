"""InternVLChat: InternViT + pixel shuffle + mlp1 + a causal LM, in the official checkpoint layout.

State-dict keys: ``vision_model.*`` (InternViT), ``mlp1.{0,1,3}.*`` (projector),
``language_model.*`` (the transformers causal LM: ``language_model.model.layers.N...``,
``language_model.lm_head.weight`` for Qwen2/Llama/Phi3; ``language_model.model.tok_embeddings``,
``language_model.output`` for InternLM2).

The LLM is built from ``config.llm_config`` with transformers' own classes for qwen2 / qwen3
(InternVL3.5, transformers >= 4.51) / llama / phi3. InternLM2 (InternVL2.5-2B/8B/26B) is the one exception: its modelling code is read from
the checkpoint directory, which needs ``trust_remote_code=True``.
"""
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import nn
from transformers import (LlamaForCausalLM, Phi3ForCausalLM, PretrainedConfig, PreTrainedModel,
                          Qwen2ForCausalLM)
from transformers.modeling_outputs import CausalLMOutputWithPast

from projects.sa2va.compat import TIES_WEIGHTS_PER_SUBMODEL, cache_kwargs
from .configuration_internvl import InternVLChatConfig, NATIVE_LLM_TYPES, REMOTE_LLM_TYPES, \
    check_llm_type
from .modeling_intern_vit import InternVisionModel
from .projector import build_mlp1, pixel_shuffle, vit_tokens_to_grid
from .visual_prompt import merge_vision_embeddings

NATIVE_LLM_CLASSES = {
    'qwen2': Qwen2ForCausalLM,
    'llama': LlamaForCausalLM,
    'phi3': Phi3ForCausalLM,
}


def native_llm_class(model_type: str) -> type:
    """transformers' causal-LM class of a native family; ``Qwen3ForCausalLM`` (InternVL3.5) is
    imported on demand because only transformers >= 4.51 has it (``check_llm_type`` says so
    first)."""
    check_llm_type(model_type)
    if model_type == 'qwen3':
        from transformers import Qwen3ForCausalLM
        return Qwen3ForCausalLM
    return NATIVE_LLM_CLASSES[model_type]


# Default LoRA targets per LLM family (every linear of attention and MLP).
LORA_TARGET_MODULES = {
    'qwen2': ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
    'qwen3': ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
    'llama': ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
    'phi3': ['qkv_proj', 'o_proj', 'gate_up_proj', 'down_proj'],
    'internlm2': ['attention.wqkv', 'attention.wo', 'feed_forward.w1', 'feed_forward.w2',
                  'feed_forward.w3'],
}


def build_language_model(llm_config: PretrainedConfig,
                         checkpoint_dir: Optional[str] = None,
                         trust_remote_code: bool = False) -> PreTrainedModel:
    """Instantiate the causal LM described by ``llm_config`` (weights initialised, not loaded).

    Args:
        llm_config: ``Qwen2Config`` / ``Qwen3Config`` / ``LlamaConfig`` / ``Phi3Config``, or the
            plain config of an internlm2 model.
        checkpoint_dir: directory holding ``modeling_internlm2.py`` (internlm2 only).
        trust_remote_code: must be True to execute the internlm2 code of ``checkpoint_dir``.

    Returns:
        a transformers ``PreTrainedModel`` with ``get_input_embeddings`` and ``generate``.
    """
    model_type = llm_config.model_type
    if model_type in NATIVE_LLM_TYPES:
        return native_llm_class(model_type)(llm_config)
    if model_type in REMOTE_LLM_TYPES:
        if not trust_remote_code:
            raise ValueError(f'llm_config model_type {model_type!r} has no transformers class: '
                             f'its code lives in the checkpoint directory; pass '
                             f'trust_remote_code=True to run it')
        code_file = Path(checkpoint_dir or '') / f'modeling_{model_type}.py'
        if checkpoint_dir is None or not code_file.is_file():
            raise FileNotFoundError(f'{code_file} is needed to build the {model_type} LLM')
        from transformers.dynamic_module_utils import get_class_from_dynamic_module
        config_cls = get_class_from_dynamic_module(
            'configuration_internlm2.InternLM2Config', str(checkpoint_dir))
        model_cls = get_class_from_dynamic_module(
            'modeling_internlm2.InternLM2ForCausalLM', str(checkpoint_dir))
        fields = {k: v for k, v in llm_config.to_dict().items() if k != 'model_type'}
        return model_cls(config_cls(**fields))
    check_llm_type(model_type)  # raises naming the reason (refused or unknown family)
    raise AssertionError(model_type)


class InternVLChat(PreTrainedModel):
    """The InternVL chat model used by Sa2VA.

    Attributes:
        vision_model (InternVisionModel): the ViT; ``(N, 3, H, W) -> last_hidden_state
            (N, 1 + h*w, C)``.
        mlp1 (nn.Sequential): projector ``(N, h*w/4, 4C) -> (N, h*w/4, D)``.
        language_model (PreTrainedModel): the causal LM (hidden size D); after
            :meth:`wrap_llm_lora` a peft ``PeftModelForCausalLM`` around it.
        img_context_token_id (int | None): id of ``<IMG_CONTEXT>``; from the config or set by
            :meth:`prepare_for_tokenizer`.
    """

    config_class = InternVLChatConfig
    main_input_name = 'pixel_values'
    base_model_prefix = 'language_model'
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_cache_class = True
    _no_split_modules = ['InternVisionEncoderLayer', 'Qwen2DecoderLayer', 'Qwen3DecoderLayer',
                         'LlamaDecoderLayer', 'Phi3DecoderLayer', 'InternLM2DecoderLayer']

    def __init__(self,
                 config: InternVLChatConfig,
                 vision_model: Optional[nn.Module] = None,
                 language_model: Optional[nn.Module] = None,
                 llm_trust_remote_code: bool = False):
        super().__init__(config)
        vcfg = config.vision_config
        patch_grid = config.image_size // vcfg.patch_size
        if (patch_grid * config.downsample_ratio) % 1 != 0:
            raise ValueError(f'patch grid {patch_grid} is not divisible by 1 / downsample_ratio '
                             f'({config.downsample_ratio})')
        self.select_layer = config.select_layer
        self.downsample_ratio = config.downsample_ratio
        self.num_image_token = config.num_image_token
        self.img_context_token_id = config.img_context_token_id
        self.vision_model = vision_model if vision_model is not None else InternVisionModel(vcfg)
        self.language_model = language_model if language_model is not None else \
            build_language_model(config.llm_config, getattr(config, '_name_or_path', None),
                                 llm_trust_remote_code)
        self.mlp1 = build_mlp1(vcfg.hidden_size, config.llm_config.hidden_size,
                               config.downsample_ratio)
        self.post_init()

    # ------------------------------------------------------------------ weights / transformers
    def _init_weights(self, module: nn.Module) -> None:
        """Init of modules not initialised by their own sub-model (the projector)."""
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=self.config.vision_config.initializer_range)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> Optional[nn.Module]:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    def tie_weights(self, *args, **kwargs) -> None:
        """Tie only as the LLM's own config says (the top config does not decide): transformers
        5 does so itself (``compat.TIES_WEIGHTS_PER_SUBMODEL``), 4.x is told here."""
        if TIES_WEIGHTS_PER_SUBMODEL:
            return super().tie_weights(*args, **kwargs)
        llm = self.language_model
        if hasattr(llm, 'get_base_model'):
            llm = llm.get_base_model()
        llm.tie_weights()

    def resize_token_embeddings(self, new_num_tokens: Optional[int] = None,
                                pad_to_multiple_of: Optional[int] = None,
                                mean_resizing: bool = True) -> nn.Embedding:
        """Resize the LLM's input embedding and lm_head to ``new_num_tokens`` rows and record
        the new ``llm_config.vocab_size``. New rows are initialised from the mean/covariance of
        the old ones (transformers' ``mean_resizing``)."""
        emb = self.language_model.resize_token_embeddings(new_num_tokens, pad_to_multiple_of,
                                                          mean_resizing)
        self.config.llm_config.vocab_size = emb.num_embeddings
        return emb

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, Path], *model_args,
                        trust_remote_code: bool = False, **kwargs) -> 'InternVLChat':
        """Load an InternVL checkpoint directory (``config.json`` + ``model.safetensors`` or
        sharded ``model-0000x-of-0000y.safetensors`` with ``model.safetensors.index.json``).

        Args:
            pretrained_model_name_or_path: the checkpoint directory.
            trust_remote_code: allow the internlm2 modelling code of the directory to run.
            **kwargs: passed to ``PreTrainedModel.from_pretrained`` (``torch_dtype``,
                ``attn_implementation``, ``config`` ...). ``output_loading_info`` is honoured.

        Raises:
            ValueError: listing the keys if any checkpoint key is unexpected, any model key is
            missing, or any shape differs. Nothing is ever half-loaded silently.
        """
        want_info = kwargs.pop('output_loading_info', False)
        if kwargs.pop('ignore_mismatched_sizes', False):
            raise ValueError('InternVLChat.from_pretrained loads strictly: '
                             'ignore_mismatched_sizes=True is not supported')
        config = kwargs.pop('config', None)
        if config is None:
            config = cls.config_class.from_pretrained(pretrained_model_name_or_path)
        try:
            # ignore_mismatched_sizes=True only makes transformers report the mismatched keys
            # (transformers 5 raises without naming them); any mismatch raises below.
            model, info = super().from_pretrained(
                pretrained_model_name_or_path, *model_args, config=config,
                llm_trust_remote_code=trust_remote_code, output_loading_info=True,
                ignore_mismatched_sizes=True, **kwargs)
        except RuntimeError as err:  # transformers' size-mismatch error names the keys
            raise ValueError(f'checkpoint {pretrained_model_name_or_path}: {err}') from err
        problems = {k: sorted(info[k]) for k in ('missing_keys', 'unexpected_keys',
                                                  'mismatched_keys', 'error_msgs') if info[k]}
        if problems:
            raise ValueError(f'checkpoint {pretrained_model_name_or_path} does not match '
                             f'InternVLChat: {json.dumps(problems, default=str)[:4000]}')
        if model.img_context_token_id is None:
            model.img_context_token_id = config.img_context_token_id
        return (model, info) if want_info else model

    def save_pretrained(self, save_directory: Union[str, Path], *args, **kwargs) -> None:
        """Write ``config.json`` + safetensors (sharded above ``max_shard_size``) in the
        official layout; ``architectures`` is recorded as ``InternVLChatModel`` like the
        official files. A LoRA-wrapped LLM must be merged first (:meth:`merge_llm_lora`)."""
        if hasattr(self.language_model, 'merge_and_unload'):
            raise ValueError('language_model is LoRA-wrapped: call merge_llm_lora() before '
                             'save_pretrained so the official key layout is written')
        super().save_pretrained(save_directory, *args, **kwargs)
        config_file = Path(save_directory) / 'config.json'
        saved = json.loads(config_file.read_text())
        saved['architectures'] = ['InternVLChatModel']
        config_file.write_text(json.dumps(saved, indent=2, sort_keys=True) + '\n')

    # ------------------------------------------------------------------------------ vision
    def extract_feature(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Vision tokens for the LLM.

        Args:
            pixel_values: ``(N, 3, S, S)`` float, ImageNet-normalised (S = 448 for the real
                models; S // 14 must be even).

        Returns:
            ``(N, (S // 28) ** 2, D)`` (``(N, 256, D)`` at 448 px) in the projector's dtype.
        """
        if self.select_layer == -1:
            vit = self.vision_model(pixel_values=pixel_values, output_hidden_states=False,
                                    return_dict=True).last_hidden_state
        else:
            vit = self.vision_model(pixel_values=pixel_values, output_hidden_states=True,
                                    return_dict=True).hidden_states[self.select_layer]
        grid = vit_tokens_to_grid(vit[:, 1:])
        shuffled = pixel_shuffle(grid, self.downsample_ratio)
        shuffled = shuffled.reshape(shuffled.shape[0], -1, shuffled.shape[-1])
        return self.mlp1(shuffled.to(self.mlp1[1].weight.dtype))

    def build_inputs_embeds(self,
                            input_ids: torch.Tensor,
                            pixel_values: Optional[torch.Tensor] = None,
                            image_flags: Optional[torch.Tensor] = None,
                            vp_overall_mask: Optional[torch.Tensor] = None,
                            prompt_masks: Optional[Sequence[torch.Tensor]] = None
                            ) -> torch.Tensor:
        """Token embeddings with the vision rows spliced in (see ``merge_vision_embeddings``).

        Args:
            input_ids: ``(B, T)`` long.
            pixel_values: ``(N_tiles, 3, S, S)`` float or None.
            image_flags: ``(N_tiles,)`` / ``(N_tiles, 1)`` long, 0 for dummy tiles.
            vp_overall_mask: ``(N_tiles,)`` bool; prompt_masks: list of ``(n_obj, 16, 16)`` bool.

        Returns:
            ``(B, T, D)`` in the embedding dtype.
        """
        embeds = self.get_input_embeddings()(input_ids)
        if pixel_values is None:
            vit_embeds = None
        else:
            if self.img_context_token_id is None:
                raise ValueError('img_context_token_id is not set: call prepare_for_tokenizer() '
                                 'or set config.img_context_token_id')
            vit_embeds = self.extract_feature(pixel_values)
        return merge_vision_embeddings(embeds, input_ids, vit_embeds, image_flags,
                                       self.img_context_token_id, vp_overall_mask, prompt_masks)

    # ----------------------------------------------------------------------------- forward
    def forward(self,
                input_ids: Optional[torch.Tensor] = None,
                pixel_values: Optional[torch.Tensor] = None,
                attention_mask: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.Tensor] = None,
                image_flags: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None,
                prompt_masks: Optional[Sequence[torch.Tensor]] = None,
                vp_overall_mask: Optional[torch.Tensor] = None,
                inputs_embeds: Optional[torch.Tensor] = None,
                past_key_values=None,
                use_cache: Optional[bool] = None,
                output_attentions: Optional[bool] = None,
                output_hidden_states: Optional[bool] = None,
                return_dict: Optional[bool] = True,
                **kwargs) -> CausalLMOutputWithPast:
        """Training / scoring forward.

        Args:
            input_ids: ``(B, T)`` long; labels: ``(B, T)`` long, -100 ignored (the LLM shifts).
            attention_mask: ``(B, T)`` bool/long, 1 for real tokens; position_ids ``(B, T)``.
            pixel_values, image_flags, vp_overall_mask, prompt_masks: see
                :meth:`build_inputs_embeds`. Ignored when ``inputs_embeds`` is given.
            output_hidden_states: return the LLM's hidden states (``len = layers + 1``, each
                ``(B, T, D)``; the last one is after the final norm) for the ``[SEG]`` head.

        Returns:
            ``CausalLMOutputWithPast`` with ``loss`` (scalar, when labels), ``logits
            (B, T, vocab)``, ``past_key_values``, ``hidden_states``.
        """
        if inputs_embeds is None:
            inputs_embeds = self.build_inputs_embeds(input_ids, pixel_values, image_flags,
                                                     vp_overall_mask, prompt_masks)
        if attention_mask is not None and attention_mask.dtype == torch.bool:
            attention_mask = attention_mask.long()
        return self.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                   position_ids=position_ids,
                                   **cache_kwargs(self.language_model, past_key_values),
                                   labels=labels, use_cache=use_cache,
                                   output_attentions=output_attentions,
                                   output_hidden_states=output_hidden_states, return_dict=True,
                                   **kwargs)

    @torch.no_grad()
    def generate(self,
                 input_ids: Optional[torch.Tensor] = None,
                 pixel_values: Optional[torch.Tensor] = None,
                 attention_mask: Optional[torch.Tensor] = None,
                 image_flags: Optional[torch.Tensor] = None,
                 vp_overall_mask: Optional[torch.Tensor] = None,
                 prompt_masks: Optional[Sequence[torch.Tensor]] = None,
                 inputs_embeds: Optional[torch.Tensor] = None,
                 **generate_kwargs):
        """Generate from the spliced embeddings with the LLM's own ``generate`` (KV cache).

        The embeddings are built once and handed as ``inputs_embeds`` to
        ``language_model.generate``; every other keyword (``max_new_tokens``, ``do_sample``,
        ``temperature``, ``top_p``, ``eos_token_id``, ``generation_config``,
        ``return_dict_in_generate``, ``output_hidden_states`` ...) goes through unchanged.

        Returns:
            what ``generate`` returns; with ``inputs_embeds`` the sequences hold only the new
            tokens ``(B, n_new)``.
        """
        if inputs_embeds is None:
            inputs_embeds = self.build_inputs_embeds(input_ids, pixel_values, image_flags,
                                                     vp_overall_mask, prompt_masks)
        if attention_mask is None:
            attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long,
                                        device=inputs_embeds.device)
        return self.language_model.generate(inputs_embeds=inputs_embeds,
                                            attention_mask=attention_mask.long(),
                                            **generate_kwargs)

    # --------------------------------------------------------------- tokens, freezing, LoRA
    def prepare_for_tokenizer(self, tokenizer) -> List[int]:
        """Adopt a tokenizer: read the ``<IMG_CONTEXT>`` id and grow the embedding / lm_head
        once if the tokenizer has more tokens than the LLM (never shrinks).

        Returns:
            ids of the rows added by this call (empty if none), e.g. Sa2VA's ``[SEG]`` ...
        """
        from projects.sa2va.constants import IMG_CONTEXT_TOKEN
        ctx_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
        if ctx_id is None or ctx_id == tokenizer.unk_token_id:
            raise ValueError(f'tokenizer has no {IMG_CONTEXT_TOKEN} token')
        self.img_context_token_id = ctx_id
        self.config.img_context_token_id = ctx_id
        old = self.get_input_embeddings().num_embeddings
        new = len(tokenizer)
        if new <= old:
            return []
        self.resize_token_embeddings(new)
        return list(range(old, new))

    def freeze(self, vision: bool = False, llm: bool = False, mlp1: bool = False) -> None:
        """Set ``requires_grad=False`` on the chosen parts (True = freeze). A frozen part keeps
        its train/eval mode; LoRA adapters added later are trainable regardless."""
        for flag, module in ((vision, self.vision_model), (llm, self.language_model),
                             (mlp1, self.mlp1)):
            if flag:
                module.requires_grad_(False)

    def wrap_llm_lora(self,
                      r: int = 128,
                      lora_alpha: int = 256,
                      lora_dropout: float = 0.05,
                      target_modules: Optional[Sequence[str]] = None,
                      trainable_token_indices: Optional[Union[List[int], Dict[str, List[int]]]]
                      = None) -> None:
        """Wrap ``language_model`` with peft LoRA (base weights frozen, adapters trainable).

        Args:
            r, lora_alpha, lora_dropout: LoRA rank, scaling numerator, dropout.
            target_modules: module-name suffixes; default per family (all attention and MLP
                linears), see ``LORA_TARGET_MODULES``.
            trainable_token_indices: rows to train (peft trainable tokens), e.g. the ids returned
                by :meth:`prepare_for_tokenizer`; a list applies to the input embedding and the
                (untied) lm_head, a dict names the modules (``{'embed_tokens': ids}``).
        """
        from peft import LoraConfig, get_peft_model
        if hasattr(self.language_model, 'merge_and_unload'):
            raise ValueError('language_model is already LoRA-wrapped')
        if target_modules is None:
            target_modules = LORA_TARGET_MODULES[self.config.llm_config.model_type]
        if isinstance(trainable_token_indices, (list, tuple)) and trainable_token_indices:
            trainable_token_indices = self._embedding_rows(list(trainable_token_indices))
        lora_cfg = LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                              target_modules=list(target_modules), task_type='CAUSAL_LM',
                              trainable_token_indices=trainable_token_indices or None)
        self.language_model = get_peft_model(self.language_model, lora_cfg)
        self.config.use_llm_lora = r

    def _embedding_rows(self, rows: List[int]) -> Dict[str, List[int]]:
        """``{module name: rows}`` for the input embedding and, if untied, the lm_head."""
        targets = [self.language_model.get_input_embeddings()]
        out_emb = self.language_model.get_output_embeddings()
        if out_emb is not None and out_emb.weight is not targets[0].weight:
            targets.append(out_emb)
        names = {id(m): n.rsplit('.', 1)[-1] for n, m in self.language_model.named_modules()}
        return {names[id(m)]: rows for m in targets}

    def merge_llm_lora(self) -> None:
        """Fold the LoRA adapters (and trainable token rows) into the base weights so that
        ``save_pretrained`` writes the official key layout again."""
        if not hasattr(self.language_model, 'merge_and_unload'):
            raise ValueError('language_model is not wrapped with LoRA')
        self.language_model = self.language_model.merge_and_unload()
        self.config.use_llm_lora = 0
