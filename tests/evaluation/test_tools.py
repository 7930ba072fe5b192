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
    ow, oh = Image.open(out / 'overlay.png').size   # labelled panels, enlarged
    assert ow > 2 * w and oh > 2 * h
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
    saved = json.loads((sample_cwd / 'eval' /
                        'metrics_refseg_refcoco_unc_val.json').read_text())
    assert saved['metrics'] == res and res['refseg/num_samples'] == 1
    assert saved['checkpoint'] == '-' and saved['config'] == CONFIG
    assert saved['split'] == 'val' and saved['settings']['max_new_tokens'] == 2
    assert saved['settings']['device'] == 'cpu' and saved['started'] <= saved['finished']
    assert 0.0 <= res['refseg/cIoU'] <= 1.0
    res = test_tool.main([CONFIG, '-', '--task', 'vos', '--data-root',
                          'data/sample/video_datas/revos', '--ann-file',
                          'meta_expressions_train_.json', '--max-items', '1',
                          '--max-new-tokens', '2', '--out', 'eval'])
    assert res['vos/num_expressions'] == 1
    assert res['vos/J&F'] == pytest.approx((res['vos/J'] + res['vos/F']) / 2)


def test_test_tool_revos_subsets_and_saved_masks(sample_cwd, monkeypatch):
    """All ReVOS expressions: referring / reason / overall, A and R (the
    sample's mask_dict_foreground.json); --save-preds writes the server
    layout Annotations/<video>/<exp_id>/<frame>.png, and a split without GT
    (--mask-file none) writes the same files."""
    import test as test_tool

    from projects.sa2va.evaluation.predictor import Sa2VAPredictor
    monkeypatch.chdir(sample_cwd)
    root = sample_cwd / 'data/sample/video_datas/revos'
    meta = json.loads((root / 'meta_expressions_train_.json').read_text())['videos']

    def first_frame_only(self, frames, text, max_new_tokens):
        h, w = np.asarray(Image.open(frames[0])).shape[:2]
        masks = np.zeros((1, len(frames), h, w), bool)
        masks[0, 0, : h // 2] = True
        import torch
        return dict(text='[SEG]', masks=torch.from_numpy(masks))

    monkeypatch.setattr(Sa2VAPredictor, 'segment_video', first_frame_only)
    args = ['--task', 'vos', '--data-root', str(root), '--ann-file',
            'meta_expressions_train_.json', '--max-new-tokens', '2']
    res = test_tool.main([CONFIG, '-', *args, '--out', 'eval_revos',
                          '--save-preds'])
    n_exp = sum(len(v['expressions']) for v in meta.values())
    types = {e['type_id'] for v in meta.values() for e in v['expressions'].values()}
    assert res['vos/num_expressions'] == n_exp and types == {0, 1}
    for key in ('J', 'F', 'A', 'R', 'J&F'):
        assert res[f'vos/overall/{key}'] == pytest.approx(
            (res[f'vos/referring/{key}'] + res[f'vos/reason/{key}']) / 2)
    name = 'vos_revos_meta_expressions_train'
    pngs = sorted((sample_cwd / 'eval_revos' / f'{name}_preds' / 'Annotations')
                  .rglob('*.png'))
    assert len(pngs) == sum(len(v['frames']) * len(v['expressions'])
                            for v in meta.values())
    vid = sorted(meta)[0]
    eid = sorted(meta[vid]['expressions'])[0]
    first = np.asarray(Image.open(sample_cwd / 'eval_revos' / f'{name}_preds' /
                                  'Annotations' / vid / eid /
                                  f'{sorted(meta[vid]["frames"])[0]}.png'))
    assert first.dtype == np.uint8 and set(np.unique(first)) == {0, 255}
    assert first[0].all() and not first[-1].any()
    res = test_tool.main([CONFIG, '-', *args, '--mask-file', 'none',
                          '--out', 'eval_revos_nogt', '--save-preds'])
    assert res == {}
    again = sorted((sample_cwd / 'eval_revos_nogt' / f'{name}_preds' /
                    'Annotations').rglob('*.png'))
    assert [p.relative_to(p.parents[2]) for p in again] == \
        [p.relative_to(p.parents[2]) for p in pngs]


DAM_ROOT = 'data/sample/describe-anything-dataset/describe-anything-dataset'


def _read_coco_captions(folder, name):
    """The caption files of run ``name`` through pycocotools' reader
    (COCOEvalCap uses it): ``{image_id: prediction}``, ``{image_id:
    [references]}``."""
    from pycocotools.coco import COCO
    coco = COCO(str(folder / f'{name}_captions_ref.json'))
    res = coco.loadRes(str(folder / f'{name}_captions_pred.json'))
    preds = {a['image_id']: a['caption'] for a in res.dataset['annotations']}
    refs = {i: [a['caption'] for a in coco.imgToAnns[i]] for i in coco.getImgIds()}
    return preds, refs


def test_test_tool_caption_osprey_and_dam(sample_cwd, monkeypatch):
    import test as test_tool

    from projects.sa2va.evaluation.predictor import Sa2VAPredictor
    monkeypatch.chdir(sample_cwd)
    # tiny model: files, formats, one caption per region
    res = test_tool.main([CONFIG, '-', '--task', 'caption', '--data-root',
                          'data/sample/osprey-724k', '--max-items', '3',
                          '--max-new-tokens', '3', '--out', 'eval_cap',
                          '--caption-backend', 'builtin'])
    out = sample_cwd / 'eval_cap'
    name = 'caption_osprey_osprey_detail_description'
    saved = json.loads((out / f'metrics_{name}.json').read_text())
    assert (saved['task'], saved['dataset'], saved['items'], saved['metrics']) \
        == ('caption', name, 3, res)
    assert res['caption/num_captions'] == 3
    assert all(0.0 <= res[f'caption/BLEU-{n}'] <= 1.0 for n in range(1, 5))
    preds, refs = _read_coco_captions(out, name)
    assert sorted(preds) == sorted(refs) == [0, 1, 2]
    images = json.loads((out / f'{name}_captions_ref.json').read_text())['images']
    assert [im['region'] for im in images] == [1, 2, 3]
    assert len({im['record'] for im in images}) == 1
    # references lose the Osprey "regionN:" label; the record's k-th
    # description belongs to region k
    raw = json.loads((sample_cwd / 'data/sample/osprey-724k/Osprey-724K/'
                      'osprey_detail_description.json').read_text())[0]
    assert [refs[k][0] for k in range(3)] == [
        test_tool.strip_region_label(d.replace('<', '').replace('>', ''))
        for d in raw['description'][:3]]
    assert not any(r[0].lower().startswith('region') for r in refs.values())

    # Describe Anything: a describe() that answers each region's own
    # reference (call order = item order in one process) gives BLEU 1
    items = test_tool.load_caption_items(test_tool.parse_args(
        ['-', '--task', 'caption', '--caption-format', 'dam',
         '--data-root', DAM_ROOT, '--subsets', 'LVIS', 'PACO']))
    calls = []

    def echo(self, image, masks, text, max_new_tokens):
        item = items[len(calls)]
        calls.append((image.size, int(np.asarray(masks).sum()), text))
        return 'region1: ' + item['reference'] + ' '

    monkeypatch.setattr(Sa2VAPredictor, 'describe', echo)
    res = test_tool.main([CONFIG, '-', '--task', 'caption', '--caption-format',
                          'dam', '--data-root', DAM_ROOT, '--subsets', 'LVIS',
                          'PACO', '--out', 'eval_dam', '--predictor-options',
                          'max_num_tiles=1', 'prompt_pool=area',
                          '--caption-backend', 'builtin'])
    n = len(items)
    assert n >= 2 and len(calls) == n
    assert res['caption/num_captions'] == n
    assert all(res[f'caption/BLEU-{k}'] == pytest.approx(1.0) for k in range(1, 5))
    assert {q for _, _, q in calls} == {
        'Please generate a detailed description for the given image region.'}
    assert all(area > 0 for _, area, _ in calls)
    preds, refs = _read_coco_captions(sample_cwd / 'eval_dam',
                                      'caption_dam_LVIS-PACO')
    assert preds == {i: items[i]['reference'] for i in range(n)}
    assert refs == {i: [items[i]['reference']] for i in range(n)}


def test_caption_region_errors_name_the_record(sample_cwd, monkeypatch):
    import test as test_tool
    monkeypatch.chdir(sample_cwd)
    items = test_tool.load_caption_items(test_tool.parse_args(
        ['-', '--task', 'caption', '--data-root', 'data/sample/osprey-724k']))
    image, mask = test_tool.caption_region(items[0])
    assert mask.shape == (image.height, image.width) and mask.any()
    bad = dict(items[0], ori_shape=(image.height + 1, image.width))
    with pytest.raises(ValueError, match=r'osprey_detail_description.json\[0\].*region 1'):
        test_tool.caption_region(bad)
    bad = dict(items[0], segmentation=[[0, 0, 1, 0, 1, 0]])
    with pytest.raises(ValueError, match='empty region mask'):
        test_tool.caption_region(bad)
    assert test_tool.strip_region_label(' Region12 :  A dog. ') == 'A dog.'
    assert test_tool.strip_region_label('A region1: dog') == 'A region1: dog'


def _run(cmd, cwd):
    import os
    import subprocess
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _torchrun():
    """``python -m torch.distributed.run`` on 2 processes and a free port
    (other test sessions may hold the default one)."""
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    return [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node',
            '2', '--master_port', str(port)]


def _saved(folder):
    """The metrics record of the only run in ``folder`` (dates and world
    size left out)."""
    (path,) = folder.glob('metrics_*.json')
    rec = json.loads(path.read_text())
    assert rec['settings'].pop('world_size') >= 1
    for key in ('started', 'finished'):
        rec.pop(key)
    return rec


@pytest.mark.parametrize('task', ['refseg', 'gcg'])
def test_two_rank_cpu_evaluation_equals_one_process(sample_cwd, task):
    """torchrun --nproc_per_node 2 on CPU joins gloo (mmengine's init_dist
    raised without CUDA), splits the items and gathers the results in item
    order: the metrics equal the one-process run. The entry point is
    tools/test.py's main() with deterministic fake predictions
    (tests/evaluation/fake_predictions.py); refseg has sentences without
    [SEG] (mmengine's gathering dropped None results), GCG ranks images by
    id."""
    entry = str(REPO / 'tests' / 'evaluation' / 'fake_predictions.py')
    args = dict(
        refseg=['--task', 'refseg', '--data-root', 'data/sample/ref_seg/refcoco',
                '--split', 'train', '--max-items', '7'],
        gcg=['--task', 'gcg', '--data-root', 'data/sample/glamm_data',
             '--ann-file', 'annotations/GranDf_HA_GCG_train.json',
             '--img-prefix', 'images/grandf/train/', '--caption-backend',
             'builtin'])[task]
    common = [CONFIG, '-', *args, '--device', 'cpu']
    _run([sys.executable, entry, *common, '--out', f'dist1_{task}'], sample_cwd)
    _run([*_torchrun(), entry, *common,
          '--out', f'dist2_{task}'], sample_cwd)
    one, two = _saved(sample_cwd / f'dist1_{task}'), _saved(sample_cwd / f'dist2_{task}')
    assert two['metrics'] == one['metrics']
    if task == 'refseg':
        assert 0 < one['metrics']['refseg/no_seg_rate'] < 1
        assert 0 < one['metrics']['refseg/cIoU'] < 1
    else:
        assert one['metrics']['gcg/num_images'] > 1
        assert one['metrics']['gcg/mIoU'] > 0
    assert {k: v for k, v in two.items() if k != 'settings'} == \
        {k: v for k, v in one.items() if k != 'settings'}


def test_cfg_options_are_config_keys_and_predictor_options_settings(monkeypatch):
    """--cfg-options merges mmengine config keys (as tools/train.py);
    --predictor-options are predictor settings; the task picks the official
    max_new_tokens."""
    import test as test_tool

    from projects.sa2va.evaluation.predictor import Sa2VAPredictor
    seen = {}

    def capture(cls, cfg, ckpt, device, **overrides):
        seen.update(cfg=cfg, ckpt=ckpt, device=device, overrides=overrides)
        return 'predictor'

    monkeypatch.setattr(Sa2VAPredictor, 'from_config', classmethod(capture))
    args = test_tool.parse_args([
        CONFIG, 'ckpt.pth', '--task', 'vos', '--data-root', 'x',
        '--cfg-options', 'randomness.seed=7', 'text_settings.max_length=77',
        '--predictor-options', 'sampled_frames=3', 'frame_rule=random',
        '--device', 'cpu'])
    assert test_tool.build_predictor(args) == 'predictor'
    assert seen['cfg'].randomness.seed == 7
    assert seen['cfg'].text_settings.max_length == 77
    assert seen['overrides'] == {'sampled_frames': 3, 'frame_rule': 'random'}
    assert seen['ckpt'] == 'ckpt.pth' and args.max_new_tokens == 2048
    gcg = test_tool.parse_args(['-', '--task', 'gcg', '--data-root', 'x'])
    assert gcg.max_new_tokens == 512
    with pytest.raises(SystemExit, match='key=value'):
        test_tool.predictor_options(test_tool.parse_args(
            ['-', '--task', 'gcg', '--data-root', 'x', '--predictor-options', 'oops']))
