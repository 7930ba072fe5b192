"""RefCOCO as (caption, mask) pairs: the cycle's GT-caption stream
(``mask-caption-cycle.md`` 8.4)."""
from __future__ import annotations

from ...constants import NUM_IMAGE_TOKENS
from ...registry import DATASETS
from ..base import estimate_text_tokens
from ..refseg import RefCOCODataset

# ---------------------------------------------------------------------------
# RefCOCO caption stream, Describe Anything
# ---------------------------------------------------------------------------
EXPRESSION_MODES = ('all', 'one_per_image')

@DATASETS.register_module()
class RefCOCOCaptionDataset(RefCOCODataset):
    """RefCOCO / + / g as (caption, mask) samples: the cycle's GT-caption
    stream.

    Reads the files as :class:`RefCOCODataset` (same arguments). With
    ``expressions='all'`` (default) every (ref, sentence) pair of the split
    is one sample (``text_mode='original'`` by default: every sentence of
    every ref). ``'one_per_image'`` keeps one per image: the image's first
    ref with its sentence (with ``text_mode='random'`` this is the owner's
    wrapper: one sentence drawn once per ref, ``instances[0]``/``text[0]``).

    Record: ``img_path``, ``ori_shape``, ``segmentations`` (``[the object's
    polygon list or RLE]``, decoded as a union of its polygons),
    ``caption`` (the lower-cased ``raw`` sentence), ``record_id``
    (``image_id=<id>#<k>``), ``dataset_type``.
    """

    def __init__(self, *args, expressions: str = 'all',
                 text_mode: str = 'original', dataset_type: str = 'refcoco',
                 **kwargs):
        if expressions not in EXPRESSION_MODES:
            raise ValueError(f'expressions must be one of {EXPRESSION_MODES}'
                             f', got {expressions!r}')
        self.expressions = expressions
        self.dataset_type = dataset_type
        super().__init__(*args, text_mode=text_mode, **kwargs)

    def load_data_list(self):
        for image in super().load_data_list():
            objects = image['objects']
            if self.expressions == 'one_per_image':
                objects = objects[:1]
            for k, obj in enumerate(objects):
                info = dict(img_path=image['img_path'],
                            ori_shape=image['ori_shape'],
                            segmentations=[obj['segmentation']],
                            caption=obj['text'],
                            record_id=f'{image["record_id"]}#{k}',
                            dataset_type=self.dataset_type)
                if image.get('record_error'):  # bad text or size, named
                    info['record_error'] = image['record_error']
                yield info

    def modality_length_of(self, info: dict) -> int:
        return NUM_IMAGE_TOKENS + 20 + estimate_text_tokens(info['caption'])
