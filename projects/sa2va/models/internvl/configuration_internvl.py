"""Configuration objects of the InternVL chat model (InternViT + projector + LLM).

``InternVisionConfig`` describes the InternViT tower (model_type ``intern_vit_6b``, the name the
official checkpoints use for both the 300M and the 6B tower), ``InternVLChatConfig`` the whole
model (model_type ``internvl_chat``) exactly as an official InternVL2.5 ``config.json`` stores it:
``vision_config``, ``llm_config``, ``downsample_ratio``, ``ps_version``, ``select_layer``,
``force_image_size``, ``template`` ...
"""
import copy
from typing import Any, Dict, Optional, Union

from transformers import AutoConfig, PretrainedConfig

from projects.sa2va.compat import (get_attn_implementation, package_version,
                                   set_attn_implementation, version_at_least)

# LLM families built with transformers' own classes (no remote code). qwen3 (InternVL3.5)
# needs transformers >= 4.51 (``LLM_MIN_TRANSFORMERS``; the legacy stack has 4.48).
NATIVE_LLM_TYPES = ('qwen2', 'llama', 'phi3', 'qwen3')
LLM_MIN_TRANSFORMERS = {'qwen3': '4.51'}
# LLM families whose modelling code is read from the checkpoint directory
# (``trust_remote_code``): the one documented exception.
REMOTE_LLM_TYPES = ('internlm2', )
# InternVL language models refused with the reason (docs/models.md, "InternVL3 / 3.5").
REFUSED_LLM_TYPES = {
    'internlm3': ('InternLM3 (InternVL3-9B) has no transformers class and is not supported; '
                  'use InternVL3-8B (Qwen2.5) or InternVL3.5-8B (Qwen3)'),
    'qwen3_moe': ('mixture-of-experts LLM (InternVL3.5-30B-A3B / 241B-A28B) is not supported: '
                  'only dense LLMs are trained here (LoRA targets, memory and the '
                  'every-parameter-gets-a-gradient rule assume a dense model)'),
    'gpt_oss': ('GPT-OSS mixture-of-experts LLM (InternVL3.5-20B-A4B) is not supported: only '
                'dense LLMs are trained here'),
    'qwen2_moe': 'mixture-of-experts LLM is not supported: only dense LLMs are trained here',
}
# ``architectures[0]`` -> model_type, for ``llm_config`` dicts without ``model_type``.
LLM_ARCHITECTURES = {
    'Qwen2ForCausalLM': 'qwen2', 'LlamaForCausalLM': 'llama', 'Phi3ForCausalLM': 'phi3',
    'Qwen3ForCausalLM': 'qwen3', 'InternLM2ForCausalLM': 'internlm2',
    'InternLM3ForCausalLM': 'internlm3', 'Qwen3MoeForCausalLM': 'qwen3_moe',
    'GptOssForCausalLM': 'gpt_oss', 'Qwen2MoeForCausalLM': 'qwen2_moe'}


def check_llm_type(model_type: str) -> None:
    """Raise ``ValueError`` naming the reason if ``model_type`` cannot be built here: a refused
    family (InternLM3, MoE), an unknown one, or qwen3 on a transformers without Qwen3."""
    if model_type in REFUSED_LLM_TYPES:
        raise ValueError(f'llm_config model_type {model_type!r}: '
                         f'{REFUSED_LLM_TYPES[model_type]}')
    if model_type not in NATIVE_LLM_TYPES + REMOTE_LLM_TYPES:
        raise ValueError(f'llm_config model_type {model_type!r} is not supported; expected one '
                         f'of {NATIVE_LLM_TYPES + REMOTE_LLM_TYPES}')
    need = LLM_MIN_TRANSFORMERS.get(model_type)
    if need and not version_at_least('transformers', need):
        have = '.'.join(map(str, package_version('transformers') or ()))
        raise ValueError(f'llm_config model_type {model_type!r} needs transformers >= {need} '
                         f'(installed: {have}); use the current environment (.venv-current)')


class InternVisionConfig(PretrainedConfig):
    """Hyper-parameters of an InternViT tower.

    Args:
        num_channels (int): input image channels (3).
        patch_size (int): side of a square patch in pixels (14).
        image_size (int): input side the position table was trained for (448); the stored
            ``position_embedding`` has ``1 + (image_size // patch_size) ** 2`` rows.
        qkv_bias (bool): the fused qkv Linear has a bias (300M tower: True, 6B: False).
        hidden_size (int): token width C (1024 for 300M, 3200 for 6B).
        num_attention_heads (int): heads; ``hidden_size`` must be divisible by it.
        intermediate_size (int): MLP width (4 * C).
        qk_normalization (bool): RMS-normalise q and k over the full C channels (6B tower).
        num_hidden_layers (int): encoder layers.
        use_flash_attn (bool): kept for config compatibility; attention always goes through
            ``scaled_dot_product_attention`` (or the eager path if ``attn_implementation='eager'``).
        hidden_act (str): MLP activation; only ``'gelu'`` (exact erf form) is supported.
        norm_type (str): ``'layer_norm'`` (LayerNorm with bias) or ``'rms_norm'``.
        layer_norm_eps (float): eps of every norm in the tower (1e-6).
        dropout (float): dropout on the projected attention output (0).
        drop_path_rate (float): stochastic depth of the last layer; layer i uses
            ``drop_path_rate * i / (num_hidden_layers - 1)``; identity in eval mode.
        attention_dropout (float): dropout on attention probabilities (training only).
        initializer_range (float): std of the normal init of Linear / conv weights.
        initializer_factor (float): initial value of the layer-scale vectors ``ls1`` / ``ls2``.
    """

    model_type = 'intern_vit_6b'

    def __init__(self,
                 num_channels: int = 3,
                 patch_size: int = 14,
                 image_size: int = 448,
                 qkv_bias: bool = False,
                 hidden_size: int = 3200,
                 num_attention_heads: int = 25,
                 intermediate_size: int = 12800,
                 qk_normalization: bool = True,
                 num_hidden_layers: int = 48,
                 use_flash_attn: bool = False,
                 hidden_act: str = 'gelu',
                 norm_type: str = 'rms_norm',
                 layer_norm_eps: float = 1e-6,
                 dropout: float = 0.0,
                 drop_path_rate: float = 0.0,
                 attention_dropout: float = 0.0,
                 initializer_range: float = 0.02,
                 initializer_factor: float = 0.1,
                 **kwargs):
        super().__init__(**kwargs)
        if hidden_size % num_attention_heads != 0:
            raise ValueError(f'InternVisionConfig: hidden_size {hidden_size} is not divisible by '
                             f'num_attention_heads {num_attention_heads}')
        if norm_type not in ('layer_norm', 'rms_norm'):
            raise ValueError(f"InternVisionConfig: norm_type must be 'layer_norm' or 'rms_norm', "
                             f'got {norm_type!r}')
        if hidden_act != 'gelu':
            raise ValueError(f"InternVisionConfig: only hidden_act='gelu' (exact erf) is "
                             f'supported, got {hidden_act!r}')
        self.num_channels = num_channels
        self.patch_size = patch_size
        self.image_size = image_size
        self.qkv_bias = qkv_bias
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.qk_normalization = qk_normalization
        self.num_hidden_layers = num_hidden_layers
        self.use_flash_attn = use_flash_attn
        self.hidden_act = hidden_act
        self.norm_type = norm_type
        self.layer_norm_eps = layer_norm_eps
        self.dropout = dropout
        self.drop_path_rate = drop_path_rate
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.initializer_factor = initializer_factor


def build_llm_config(llm_config: Union[None, Dict[str, Any], PretrainedConfig]) -> PretrainedConfig:
    """Turn the ``llm_config`` of an InternVL ``config.json`` into a transformers config.

    Args:
        llm_config: dict as stored in ``config.json`` (must hold ``model_type``), a config
            object (returned as is), or None (a default Qwen2 config).

    Returns:
        ``Qwen2Config`` / ``Qwen3Config`` / ``LlamaConfig`` / ``Phi3Config`` for the native
        families; for
        ``internlm2`` a plain ``PretrainedConfig`` holding the fields (its real class lives in
        the checkpoint directory and is loaded with ``trust_remote_code``, see
        ``modeling_internvl_chat.build_language_model``).
    """
    if isinstance(llm_config, PretrainedConfig):
        return llm_config
    cfg = copy.deepcopy(llm_config) if llm_config is not None else {'model_type': 'qwen2'}
    if 'model_type' not in cfg:
        arch = (cfg.get('architectures') or [''])[0]
        guess = LLM_ARCHITECTURES.get(arch)
        if guess is None:
            raise ValueError(f'llm_config has neither model_type nor a known architecture: '
                             f'{cfg.get("architectures")}')
        cfg['model_type'] = guess
    model_type = cfg.pop('model_type')
    check_llm_type(model_type)
    # Official files pin 'flash_attention_2' here; the attention backend is chosen at load
    # time instead (``from_pretrained(attn_implementation=...)``, default SDPA).
    cfg.pop('attn_implementation', None)
    if model_type in NATIVE_LLM_TYPES:
        return AutoConfig.for_model(model_type, **cfg)
    if model_type in REMOTE_LLM_TYPES:
        config = PretrainedConfig(**cfg)
        config.model_type = model_type  # instance attribute, serialised by to_dict
        return config
    raise AssertionError(model_type)  # check_llm_type admitted only the two groups above


class InternVLChatConfig(PretrainedConfig):
    """Configuration of the whole InternVL chat model, as in an official ``config.json``.

    Args:
        vision_config (dict | InternVisionConfig): the ViT tower.
        llm_config (dict | PretrainedConfig): the language model (``model_type`` qwen2 / qwen3 /
            llama / phi3, or internlm2 with remote code; internlm3 and MoE families raise).
        use_backbone_lora, use_llm_lora (int): stored for compatibility (LoRA is applied by
            ``InternVLChat.wrap_llm_lora``, not at construction).
        select_layer (int): which ViT hidden state feeds the projector (-1: the last).
        force_image_size (int | None): tile size in pixels (448).
        downsample_ratio (float): pixel-shuffle scale (0.5: 2 x 2 tokens -> 1).
        template (str): chat template name (``'internvl2_5'``).
        dynamic_image_size, use_thumbnail (bool), min_dynamic_patch, max_dynamic_patch (int):
            tiling settings used by the data pipeline.
        ps_version (str): pixel-shuffle version; only ``'v2'`` is implemented.
        img_context_token_id (int | None): id of ``<IMG_CONTEXT>`` in the tokenizer; not part of
            the official file, stored when known so the model can splice image embeddings.
    """

    model_type = 'internvl_chat'
    is_composition = True
    sub_configs = {'vision_config': InternVisionConfig, 'llm_config': AutoConfig}

    def __init__(self,
                 vision_config: Union[None, Dict[str, Any], InternVisionConfig] = None,
                 llm_config: Union[None, Dict[str, Any], PretrainedConfig] = None,
                 use_backbone_lora: int = 0,
                 use_llm_lora: int = 0,
                 select_layer: int = -1,
                 force_image_size: Optional[int] = None,
                 downsample_ratio: float = 0.5,
                 template: Optional[str] = None,
                 dynamic_image_size: bool = False,
                 use_thumbnail: bool = False,
                 ps_version: str = 'v2',
                 min_dynamic_patch: int = 1,
                 max_dynamic_patch: int = 6,
                 img_context_token_id: Optional[int] = None,
                 **kwargs):
        super().__init__(**kwargs)
        if isinstance(vision_config, InternVisionConfig):
            self.vision_config = vision_config
        else:
            self.vision_config = InternVisionConfig(**(vision_config or {}))
        self.llm_config = build_llm_config(llm_config)
        if ps_version != 'v2':
            raise ValueError(f"InternVLChatConfig: only ps_version 'v2' is implemented, got "
                             f'{ps_version!r} (v1 yields a spatially transposed grid)')
        self.use_backbone_lora = use_backbone_lora
        self.use_llm_lora = use_llm_lora
        self.select_layer = select_layer
        self.force_image_size = force_image_size
        self.downsample_ratio = downsample_ratio
        self.template = template
        self.dynamic_image_size = dynamic_image_size
        self.use_thumbnail = use_thumbnail
        self.ps_version = ps_version
        self.min_dynamic_patch = min_dynamic_patch
        self.max_dynamic_patch = max_dynamic_patch
        self.img_context_token_id = img_context_token_id
        requested = get_attn_implementation(self)
        if requested is not None:  # reach the sub-configs built above (compat)
            set_attn_implementation(self, requested)

    @property
    def image_size(self) -> int:
        """Tile side in pixels: ``force_image_size`` or the vision config's ``image_size``."""
        return self.force_image_size or self.vision_config.image_size

    @property
    def num_image_token(self) -> int:
        """``<IMG_CONTEXT>`` tokens per tile: ``(image_size // patch_size * ratio) ** 2`` (256)."""
        grid = self.image_size // self.vision_config.patch_size
        return int(grid * self.downsample_ratio) ** 2

    def to_dict(self) -> Dict[str, Any]:
        """Serialise with nested ``vision_config`` / ``llm_config`` dicts (official layout)."""
        output = super().to_dict()
        for key in ('vision_config', 'llm_config'):
            sub = getattr(self, key)
            output[key] = sub.to_dict()
            for private in ('transformers_version', '_attn_implementation_autoset'):
                output[key].pop(private, None)
            if key == 'llm_config':
                output[key]['model_type'] = sub.model_type
        return output
