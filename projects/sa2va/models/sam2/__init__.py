"""SAM2 / SAM2.1 written for Sa2VA: Hiera + FPN image encoder, prompt
encoder, mask decoder and the video memory path, loading the official
checkpoints by their original key names.

Entry points: :func:`build_sam2` (registered in ``MODELS`` as ``'SAM2'``),
:class:`SAM2Base` (``forward_image``, ``forward_language_prompt``,
``track_step``) and :func:`normalize_sam2_images`.
"""
from .build import (build_sam2, build_sam2_model, load_sam2_state_dict,
                    read_state_dict)
from .presets import CHECKPOINT_FILES, PRESETS, preset_config
from .sam2_base import NO_OBJ_SCORE, SAM2Base, normalize_sam2_images

__all__ = ['build_sam2', 'build_sam2_model', 'load_sam2_state_dict',
           'read_state_dict', 'PRESETS', 'CHECKPOINT_FILES', 'preset_config',
           'SAM2Base', 'NO_OBJ_SCORE', 'normalize_sam2_images']
