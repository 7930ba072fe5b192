"""InternVL (InternViT + pixel shuffle + mlp1 + LLM), written for this project."""
from .build import build_internvl_chat
from .configuration_internvl import InternVisionConfig, InternVLChatConfig
from .modeling_intern_vit import InternVisionModel
from .modeling_internvl_chat import InternVLChat
from .projector import build_mlp1, pixel_shuffle
from .tiny import save_tiny_internvl, tiny_internvl_config
from .visual_prompt import merge_vision_embeddings, visual_prompt_rows

__all__ = [
    'InternVisionConfig', 'InternVLChatConfig', 'InternVisionModel', 'InternVLChat',
    'build_mlp1', 'pixel_shuffle', 'merge_vision_embeddings', 'visual_prompt_rows',
    'tiny_internvl_config', 'save_tiny_internvl', 'build_internvl_chat'
]
