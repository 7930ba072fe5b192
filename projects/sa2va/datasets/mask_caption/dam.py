"""Describe Anything regions as (caption, mask) pairs: loop 2 of the dual
loop (``mask-caption-cycle.md`` 8.5)."""
from __future__ import annotations

from ...registry import DATASETS
from ..visual_prompt import DescribeAnythingDataset

@DATASETS.register_module()
class DescribeAnythingCaptionDataset(DescribeAnythingDataset):
    """Describe Anything regions as (caption, mask) samples (the cycle's
    loop-2 data). The index, shard name cache and tar loading are those of
    :class:`~projects.sa2va.datasets.visual_prompt.DescribeAnythingDataset`;
    each record adds ``caption`` (the stripped caption) and
    ``dataset_type`` ``dam_<SUBSET>``."""

    def get_data_info(self, idx: int) -> dict:
        info = super().get_data_info(idx)
        info['caption'] = info['conversation'][0]['output']
        info['dataset_type'] = 'dam_' + info['record_id'].split('/', 1)[0]
        return info
