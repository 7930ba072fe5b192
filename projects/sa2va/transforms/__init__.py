"""The seed's data rules (functional API) and the registered transforms.

``from projects.sa2va.transforms import pixel_values_from_image, ...``: the
functional names below are a public interface (used by checks outside the
project); the transform classes wrap them for config pipelines.
"""
from .base import BaseTransform, RecordError, bump  # noqa: F401
from .formatting import (AddVisualPromptText, EncodeConversation,  # noqa
                         PackInputs, build_tokenizer)
from .functional import *  # noqa: F401,F403
from .functional import __all__ as _functional_all
from .loading import (DynamicTiles, ImagesToTensor, LoadFrames,  # noqa
                      LoadImage, SAM2Input, open_rgb)
from .masks import DecodeMasks, PoolPromptMasks, decode_object  # noqa
from .mask_caption import MaskCaptionOutputs  # noqa: F401
from .qwen_vl import QwenVLImageInput  # noqa: F401
from .qwen_vl_video import QwenVLVideoInput  # noqa: F401
from .video import (DecodeVideoMasks, LoadVideoFrames,  # noqa: F401
                    SampleVideoFrames, SampleVideoObjects,
                    sample_frame_indices)
from .text import (ConversationEncoder, SampleRejected,  # noqa: F401
                   collapse_image_tokens, context_run, conversation_from_turns,
                   get_template, image_block, video_block)

__all__ = list(_functional_all) + [
    'BaseTransform', 'RecordError', 'AddVisualPromptText',
    'EncodeConversation', 'PackInputs', 'DynamicTiles', 'ImagesToTensor',
    'LoadFrames', 'LoadImage', 'SAM2Input', 'DecodeMasks', 'PoolPromptMasks',
    'ConversationEncoder', 'SampleRejected', 'context_run', 'image_block',
    'video_block', 'get_template', 'conversation_from_turns',
    'collapse_image_tokens', 'build_tokenizer', 'decode_object',
    'MaskCaptionOutputs', 'DecodeVideoMasks', 'LoadVideoFrames', 'SampleVideoFrames',
    'SampleVideoObjects', 'sample_frame_indices'
]
