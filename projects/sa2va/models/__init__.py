"""models of the Sa2VA plugin."""
from .internvl import InternVLChat, InternVLChatConfig  # noqa: F401
from .sam2 import SAM2Base, build_sam2, normalize_sam2_images  # noqa: F401
from .data_preprocessor import Sa2VADataPreprocessor  # noqa: F401
from .losses import MaskBCELoss, MaskDiceLoss  # noqa: F401
from .sa2va import Sa2VAModel  # noqa: F401
from .qwen_vl import QwenVLChat  # noqa: F401
from .cycle_preprocessor import MaskCaptionCycleDataPreprocessor  # noqa: F401
from .cycle import MaskCaptionCycleModel  # noqa: F401
