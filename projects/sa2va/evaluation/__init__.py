"""evaluation of the Sa2VA plugin.

* :mod:`.metrics`: benchmark metrics (cIoU / gIoU, J / F / J&F, ReVOS A /
  R and subsets) as functions and registered mmengine metrics
  (``RefSegMetric``, ``VideoJFMetric``, ``GCGMetric``, ``CaptionMetric``);
  :mod:`.gcg_metrics` (GLaMM's AP50 / mIoU / recall, phrase similarity)
  and :mod:`.caption_metrics` (BLEU / CIDEr-D, COCO caption files,
  pycocoevalcap scorers) hold the GCG and caption rules.
* :mod:`.benchmark_items`: the evaluation items of ``tools/test.py``.
* :mod:`.predictor`: ``Sa2VAPredictor`` (segment / describe / chat / GCG on
  images and videos) built from a config + checkpoint or an export
  directory.
"""
from .metrics import (CaptionMetric, GCGMetric, RefSegMetric, VideoJFMetric,
                      bleu, boundary_f, cider_d, refseg_ciou_giou, region_j,
                      video_jf)

__all__ = ['RefSegMetric', 'VideoJFMetric', 'GCGMetric', 'CaptionMetric',
           'refseg_ciou_giou', 'region_j', 'boundary_f', 'video_jf', 'bleu',
           'cider_d']
