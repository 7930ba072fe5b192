"""Datasets of the six families, collate function and samplers."""
from .base import (Sa2VABaseDataset, build_pipeline,  # noqa: F401
                   estimate_text_tokens, estimate_tiles)
from .collate import sa2va_collate_fn  # noqa: F401
from .collate_qwen_vl import sa2va_qwen_vl_collate_fn  # noqa: F401
from .samplers import (LengthGroupedSampler, get_modality_lengths,  # noqa
                       length_grouped_indices)
from .vqa import LLaVADataset  # noqa: F401
from .mixing import MixedDataset  # noqa: F401
from .refseg import RefCOCODataset, SampleReferringObjects  # noqa: F401
from .gcg import GCGDataset, GCGQuestion  # noqa: F401
from .visual_prompt import (DescribeAnythingDataset,  # noqa: F401
                            LoadImageFromTar, OspreyDataset,
                            OspreyDescriptionQuestions)
from .refvos import (MeViSDataset, RefYTVOSDataset,  # noqa: F401
                     ReVOSDataset, SAVReferringDataset)
from .vqa import ChatUniViDataset  # noqa: F401
from .mask_caption import (DescribeAnythingCaptionDataset,  # noqa: F401
                           OpenImageSegDataset, RefCOCOCaptionDataset,
                           SA1BDataset, SAVPairNpzDataset,
                           SAVPairReleaseDataset)
from .own_data import LoadMaskFiles, OwnDataset  # noqa: F401
