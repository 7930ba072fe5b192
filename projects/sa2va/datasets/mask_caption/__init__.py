"""Family 6, the owner's mask <-> caption data (``mask-caption-cycle.md`` 8).

Sources, one module each (``configs/_base_/datasets/mask_caption.py``
composes them):

* ``sav_npz``: :class:`SAVPairNpzDataset` -- the owner's derived SA-V frame pairs,
  ``<data_root>/**/masklet_data_*.npz`` with ``frame1, mask1, frame2, mask2``;
* ``sav_release``: :class:`SAVPairReleaseDataset` -- the same pairs made from the official
  SA-V release (``sav_*_manual.json`` / ``_auto.json`` + mp4 or a frame
  folder), two annotated frames of one masklet chosen by
  :class:`SampleSAVFramePair` (a documented, seeded rule);
* ``sa1b``: :class:`SA1BDataset` -- SA-1B raw (``js/<id>.json`` + ``img/<id>.jpg``),
  one sample per (image, annotation) with ``area >= min_area``;
* ``openimage``: :class:`OpenImageSegDataset` -- OpenImage v7 segmentation CSV + mask PNGs,
  one sample per CSV row, the index is the rows' byte offsets;
* ``refcoco``: :class:`RefCOCOCaptionDataset` -- RefCOCO as (caption, mask) pairs, every
  expression by default (the owner used one per image: an option);
* ``dam``: :class:`DescribeAnythingCaptionDataset` -- Describe Anything regions (the
  shard index and tar loading of ``visual_prompt.py``).

``common`` holds the compact index base; ``supervised`` the Sa2VA forms of
captioned samples (:class:`MaskCaptionToSa2VA`). Every sample ends in
:class:`~projects.sa2va.transforms.mask_caption.MaskCaptionOutputs`
(re-exported here), which makes the issue's
tensors for frame 1 and frame 2 (``*2`` is the paired frame, the target; for
single images ``*2`` is the same tensor as ``*1``):

=====================  ==================  ===============================
key                    shape               dtype / range
=====================  ==================  ===============================
``pixel_values{1,2}``  (3, 448, 448)       float32 ImageNet-normalised
                                           (``as_uint8``: uint8 0..255)
``g_pixel_values{1,2}``(3, 1024, 1024)     uint8 0..255, direct resize of
                                           the raw pixels
``prompt_masks{1,2}``  (16, 16)            bool (the configured rule)
``masks{1,2}``         (1024, 1024)        float32 {0, 1} (PIL nearest)
``caption``            str or None
``dataset_type``       str                 ``sav``/``sa1b``/``openimage``/
                                           ``refcoco``/``dam_<SUBSET>``
``has_paired_frame``   bool
=====================  ==================  ===============================

``route='option_a'`` gives the seed's intermediate format instead
(``image{1,2}`` (3, 1024, 1024) float32 normalised bilinear, ``mask{1,2}``
(1024, 1024) float32 {0, 1}, ``g_pixel_values{1,2}``); the data
preprocessor derives the 448 image and the 16 x 16 grid from them.

Compact indexes: the SA-1B, OpenImage and npz indexes are a few numpy arrays
(no per-sample Python objects) shared by forked workers; see
:class:`CompactIndexDataset`.
"""
from ...transforms.mask_caption import (  # noqa: F401
    MASK_CAPTION_KEYS, MASK_CAPTION_OPTION_A_KEYS, ROUTES, MaskCaptionOutputs,
    nearest_mask, vision_pixel_values)
from .common import CompactIndexDataset  # noqa: F401
from .dam import DescribeAnythingCaptionDataset  # noqa: F401
from .openimage import (LoadImageAndMaskPNG, OpenImageSegDataset,  # noqa
                        csv_row_offsets)
from .refcoco import EXPRESSION_MODES, RefCOCOCaptionDataset  # noqa: F401
from .sa1b import LoadSA1BAnnotation, SA1BDataset  # noqa: F401
from .sav_npz import (LoadNpzPair, SAVPairNpzDataset,  # noqa: F401
                      npz_frame_to_image, npz_mask)
from .sav_release import (PAIR_RULES, SampleSAVFramePair,  # noqa: F401
                          SAVPairReleaseDataset)
from .supervised import SUPERVISED_TASKS, MaskCaptionToSa2VA  # noqa: F401

__all__ = [
    'CompactIndexDataset', 'SAVPairNpzDataset', 'SAVPairReleaseDataset',
    'SA1BDataset', 'OpenImageSegDataset', 'RefCOCOCaptionDataset',
    'DescribeAnythingCaptionDataset', 'LoadNpzPair', 'SampleSAVFramePair',
    'LoadSA1BAnnotation', 'LoadImageAndMaskPNG', 'MaskCaptionOutputs',
    'MaskCaptionToSa2VA', 'SUPERVISED_TASKS',
    'MASK_CAPTION_KEYS', 'MASK_CAPTION_OPTION_A_KEYS', 'csv_row_offsets',
    'nearest_mask', 'vision_pixel_values', 'npz_frame_to_image', 'npz_mask'
]
