"""Entry point for the distributed evaluation test: ``tools/test.py`` with
``Sa2VAPredictor.segment`` replaced by a deterministic function of the
image and question (a random tiny model rarely writes ``[SEG]``), so the
one-process and torchrun runs have non-trivial figures to compare.

    python tests/evaluation/fake_predictions.py <tools/test.py arguments>
    torchrun --nproc_per_node 2 tests/evaluation/fake_predictions.py ...
"""
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
for p in (str(REPO), str(REPO / 'tools')):
    if p not in sys.path:
        sys.path.insert(0, p)


def fake_segment(self, image, text, max_new_tokens=64, **kwargs):
    """No ``[SEG]`` when ``len(text) % 3 == 0``; otherwise two masks from
    colour thresholds of the image, named in a GCG-style answer."""
    arr = np.asarray(image.convert('RGB') if hasattr(image, 'convert') else image)
    if len(text) % 3 == 0:
        return dict(text='nothing here', masks=torch.zeros((0,) + arr.shape[:2],
                                                           dtype=torch.bool))
    masks = np.stack([arr[..., 0] > 100 + len(text) % 50, arr[..., 1] > 150])
    return dict(text='A <p> red thing </p> [SEG] near <p> the object </p> [SEG].',
                masks=torch.from_numpy(masks))


def main(argv):
    from projects.sa2va.evaluation.predictor import Sa2VAPredictor
    Sa2VAPredictor.segment = fake_segment
    import test as test_tool
    return test_tool.main(argv)


if __name__ == '__main__':
    main(sys.argv[1:])
