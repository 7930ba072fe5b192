"""tools/predict.py, tools/test.py and tools/export.py on the tiny demo
config and the generated sample data (random weights: the figures are those
of an untrained model; the files and their formats are checked)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / 'configs' / 'sa2va_tiny_demo.py')
sys.path.insert(0, str(REPO / 'tools'))


def test_predict_image_region_and_video(sample_cwd, monkeypatch):
    import predict
    monkeypatch.chdir(sample_cwd)
    image = next((sample_cwd / 'data/sample/ref_seg/refcoco/coco2014/train2014').iterdir())
    rec = predict.main([CONFIG, '-', '--image', str(image), '--text',
                        'Please segment the cat.', '--out', 'out_img',
                        '--max-new-tokens', '3'])
    out = sample_cwd / 'out_img'
    saved = json.loads((out / 'masks_rle.json').read_text())
    assert saved['answer'] == rec['answer']
    assert len(list(out.glob('object_*.png'))) == len(saved['objects'])
    w, h = Image.open(image).size
    assert Image.open(out / 'overlay.png').size == (w, h)
    region = np.zeros((h, w), np.uint8)
    region[: h // 2, : w // 2] = 255
    Image.fromarray(region).save(sample_cwd / 'region.png')
    predict.main([CONFIG, '-', '--image', str(image), '--region', 'region.png',
                  '--text', 'What is region1?', '--out', 'out_region',
                  '--max-new-tokens', '3'])
    assert (sample_cwd / 'out_region' / 'answer.txt').exists()
    video = next(p for p in (sample_cwd / 'data/sample/video_datas/revos').iterdir()
                 if p.is_dir())
    rec = predict.main([CONFIG, '-', '--video', str(video), '--text',
                        'segment the dog', '--out', 'out_vid',
                        '--max-new-tokens', '3'])
    assert rec['key_frames'] and (sample_cwd / 'out_vid' / 'overlay.png').exists()


def test_test_tool_refseg_and_vos(sample_cwd, monkeypatch):
    import test as test_tool
    monkeypatch.chdir(sample_cwd)
    res = test_tool.main([CONFIG, '-', '--task', 'refseg', '--data-root',
                          'data/sample/ref_seg/refcoco', '--max-items', '1',
                          '--max-new-tokens', '2', '--out', 'eval'])
    saved = json.loads((sample_cwd / 'eval' / 'metrics_refseg.json').read_text())
    assert saved['metrics'] == res and res['refseg/num_samples'] == 1
    assert 0.0 <= res['refseg/cIoU'] <= 1.0
    res = test_tool.main([CONFIG, '-', '--task', 'vos', '--data-root',
                          'data/sample/video_datas/revos', '--ann-file',
                          'meta_expressions_train_.json', '--max-items', '1',
                          '--max-new-tokens', '2', '--out', 'eval'])
    assert res['vos/num_expressions'] == 1
    assert res['vos/J&F'] == pytest.approx((res['vos/J'] + res['vos/F']) / 2)
