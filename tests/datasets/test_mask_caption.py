"""Mask <-> caption family: SA-V pairs (npz, release), SA-1B, OpenImage v7,
RefCOCO captions, Describe Anything; outputs, rules, bad files, indexes."""
from __future__ import annotations

import copy
import csv
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torchvision.transforms import functional as TF

from projects.sa2va.constants import IMAGENET_MEAN, IMAGENET_STD
from projects.sa2va.datasets.inspect import check_dataset
from projects.sa2va.datasets.mask_caption import (
    MaskCaptionOutputs, SampleSAVFramePair, csv_row_offsets, nearest_mask,
    npz_frame_to_image)
from projects.sa2va.datasets.mixing import apply_pipeline_defaults
from projects.sa2va.transforms.base import RecordError
from projects.sa2va.transforms.functional import (derive_mask_caption_batch,
                                                  mask_caption_item,
                                                  pool_prompt_masks,
                                                  sam2_pixel_values)
from tests.conftest import shared_path
from tests.datasets.family_utils import base_config

LO = min((0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
HI = max((1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    from projects.sa2va.sample_data.api import make_sample_data
    root = tmp_path_factory.mktemp('mc')
    return root, make_sample_data(root, families=['mask_caption'],
                                  bad_records=True)


@pytest.fixture(scope='module')
def cfg():
    return base_config('mask_caption')


def build(cfg, data, name, pipeline_overrides=None, pipeline_defaults=None,
          **kw):
    import projects.sa2va.datasets  # noqa: F401
    from projects.sa2va.registry import DATASETS
    root, _ = data
    c = copy.deepcopy(cfg[name].to_dict())
    c.update(kw)
    if 'index_cache_dir' in c:
        c['index_cache_dir'] = None
    return DATASETS.build(apply_pipeline_defaults(
        c, defaults=pipeline_defaults, overrides=pipeline_overrides,
        data_root=('./data/', f'{root}/')))


def ref_pixel_values(image):
    """The owner's 448 path written with torchvision: PIL bilinear,
    ToTensor, Normalize."""
    return TF.normalize(TF.to_tensor(image.convert('RGB').resize(
        (448, 448), Image.BILINEAR)), IMAGENET_MEAN, IMAGENET_STD)


def check_frame(sample, k, image, mask, prompt_mode='nearest',
                interpolation='bilinear'):
    """Every output of frame k against its definition on the raw data."""
    pv, g = sample[f'pixel_values{k}'], sample[f'g_pixel_values{k}']
    pm, m = sample[f'prompt_masks{k}'], sample[f'masks{k}']
    assert pv.shape == (3, 448, 448) and pv.dtype == torch.float32
    assert LO - 1e-6 <= float(pv.min()) and float(pv.max()) <= HI + 1e-6
    assert g.shape == (3, 1024, 1024) and g.dtype == torch.uint8
    assert pm.shape == (16, 16) and pm.dtype == torch.bool
    assert m.shape == (1024, 1024) and m.dtype == torch.float32
    assert set(torch.unique(m).tolist()) <= {0.0, 1.0}
    if interpolation == 'bilinear':
        assert torch.equal(pv, ref_pixel_values(image))
    # the SAM2 input is the direct 1024 resize of the raw image, exactly
    assert torch.equal(g, sam2_pixel_values(image))
    assert torch.equal(g, torch.from_numpy(np.asarray(
        image.convert('RGB').resize((1024, 1024))).copy()).permute(2, 0, 1))
    assert torch.equal(pm, pool_prompt_masks(
        torch.from_numpy(mask)[None], mode=prompt_mode)[0])
    assert torch.equal(m, mask_caption_item(image, mask)['mask1'])


def first_ok(ds):
    for i in range(len(ds)):
        try:
            return i, ds.prepare_data(i)
        except Exception:  # noqa: BLE001 - bad records of the sample set
            continue
    raise AssertionError('no good record')


# ---------------------------------------------------------------------------
# SA-V npz pairs
# ---------------------------------------------------------------------------
def test_sav_npz_pairs(cfg, data):
    root, manifest = data
    ds = build(cfg, data, 'mc_sav_npz')
    files = sorted(f['file'] for f in manifest['datasets']['sav_npz']['files'])
    assert len(ds) == len(files) + 1          # + the truncated npz
    report = check_dataset(ds)
    assert report.ok == len(files) and dict(report.problems) == {
        'corrupt_file': 1}
    layouts = set()
    for idx, rel in enumerate(files):
        s = ds.prepare_data(idx)
        assert s['meta']['record_id'] == rel.split('sav_npz/')[1]
        with np.load(root / rel) as z:
            f1, m1, f2, m2 = z['frame1'], z['mask1'], z['frame2'], z['mask2']
        layouts.add((f1.shape[0] == 3, f1.dtype.kind))
        hwc = [f if f.shape[-1] == 3 else f.transpose(1, 2, 0)
               for f in (f1, f2)]
        ims = [Image.fromarray(f if f.dtype == np.uint8 else
                               np.rint(f.astype(np.float64) * 255)
                               .astype(np.uint8)) for f in hwc]
        check_frame(s, 1, ims[0], (m1 > 0).astype(np.uint8))
        check_frame(s, 2, ims[1], (m2 > 0).astype(np.uint8))
        # frame 2 / mask 2 are the target: a different frame
        assert not torch.equal(s['g_pixel_values1'], s['g_pixel_values2'])
        assert s['dataset_type'] == 'sav' and s['has_paired_frame'] is True
        assert s['caption'] is None
    assert layouts == {(False, 'u'), (True, 'f'), (False, 'f'), (True, 'u')}
    assert len(build(cfg, data, 'mc_sav_npz', max_samples=2)) == 2


def test_npz_frame_conversion():
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    ref = np.asarray(npz_frame_to_image(hwc))
    assert np.array_equal(ref, hwc)
    chw01 = (hwc.astype(np.float32) / 255).transpose(2, 0, 1)
    assert np.array_equal(np.asarray(npz_frame_to_image(chw01)), hwc)
    assert np.array_equal(np.asarray(npz_frame_to_image(
        hwc.astype(np.float32))), hwc)
    with pytest.raises(ValueError, match='outside 0..255'):
        npz_frame_to_image(hwc.astype(np.float32) * 2)
    with pytest.raises(ValueError, match='expected'):
        npz_frame_to_image(hwc[..., :2])


# ---------------------------------------------------------------------------
# SA-V release
# ---------------------------------------------------------------------------
def _decode_rle(rle):
    return mask_utils.decode(dict(size=rle['size'],
                                  counts=rle['counts'].encode('ascii')))


def test_sav_release_generated(cfg, data):
    root, manifest = data
    ds = build(cfg, data, 'mc_sav_release')
    videos = manifest['datasets']['sav_release']['videos']
    expected = 0
    for v in videos:
        ann = json.loads((root / v['manual']).read_text())
        for k in range(ann['masklet_num']):
            expected += sum(_decode_rle(fr[k]).any()
                            for fr in ann['masklet']) >= 2
    assert len(ds) == expected
    report = check_dataset(ds)
    assert report.ok == len(ds) and not report.problems
    s = ds.prepare_data(0)
    t1, t2 = s['meta']['pair_frame_indices']
    assert t1 < t2
    assert s['has_paired_frame'] and s['dataset_type'] == 'sav'


@pytest.fixture(scope='module')
def real_sav(tmp_path_factory):
    """The real SA-V example JSONs with synthesized frames of their size
    (frame 4 t filled with the grey value t)."""
    root = tmp_path_factory.mktemp('real_sav')
    folder = root / 'sav_train' / 'sav_000'
    folder.mkdir(parents=True)
    for kind in ('manual', 'auto'):
        src = shared_path('data', 'real', 'sa-v', f'sav_000001_{kind}.json')
        (folder / src.name).write_bytes(src.read_bytes())
    frames = root / 'JPEGImages_24fps' / 'sav_000001'
    frames.mkdir(parents=True)
    for t in range(121):
        Image.new('RGB', (480, 848), (t, t, t)).save(
            frames / f'{4 * t:05d}.jpg', quality=95)
    return root


def _real_dataset(root, pair_rule=None, seed=0):
    import projects.sa2va.datasets  # noqa: F401
    from projects.sa2va.registry import DATASETS
    return DATASETS.build(dict(
        type='SAVPairReleaseDataset', data_root=str(root),
        annotation_types=['manual', 'auto'],
        frames_folder='JPEGImages_24fps', seed=seed,
        pipeline=[dict(type='LoadSAVAnnotation', frame_stride=4),
                  pair_rule or dict(type='SampleSAVFramePair'),
                  dict(type='LoadFrames'),
                  dict(type='MaskCaptionOutputs')]))


def test_sav_release_real_example(real_sav):
    ds = _real_dataset(real_sav)
    folder = real_sav / 'sav_train' / 'sav_000'
    anns = {kind: json.loads((folder / f'sav_000001_{kind}.json')
                             .read_text()) for kind in ('auto', 'manual')}
    assert [a['masklet_num'] for a in anns.values()] == [9, 5]
    # every masklet of the example is visible in >= 2 annotated frames
    assert len(ds) == 14
    assert ds.get_data_info(0)['record_id'] == 'sav_000001/auto#0'
    assert ds.get_data_info(9)['record_id'] == 'sav_000001/manual#0'
    for idx in (0, 9, 13):
        info = ds.get_data_info(idx)
        kind = info['record_id'].split('/')[1].split('#')[0]
        k = info['masklet_index']
        results = ds.prepare_data(idx)
        t1, t2 = results['pair_frame_indices']
        assert t1 < t2
        for j, t in enumerate((t1, t2), 1):
            raw = _decode_rle(anns[kind]['masklet'][t][k])
            assert raw.any()                   # the object is visible
            frame = Image.new('RGB', (480, 848), (t, t, t))
            assert torch.equal(results[f'masks{j}'], nearest_mask(raw))
            assert torch.equal(results[f'prompt_masks{j}'],
                               pool_prompt_masks(raw[None])[0])
            g = results[f'g_pixel_values{j}']
            assert abs(float(g.float().mean()) - t) < 1.5   # frame 4 t
            assert g.shape == (3, 1024, 1024)
            assert torch.equal(results[f'masks{j}'],
                               mask_caption_item(frame, raw)['mask1'])
    # the pair masks are the decoded RLEs, before any resize
    steps = ds.pipeline.transforms
    results = ds.get_data_info(9)
    results['rng'] = np.random.default_rng([0, 9])
    results = steps[1](steps[0](results))
    t1, t2 = results['pair_frame_indices']
    for m, t in zip(results['pair_masks'], (t1, t2)):
        assert np.array_equal(m, _decode_rle(anns['manual']['masklet'][t][0]))
    # seeded: the same seed gives the same pairs, another seed other ones
    again = _real_dataset(real_sav)
    pairs = [ds.prepare_data(i)['pair_frame_indices'] for i in range(14)]
    assert pairs == [again.prepare_data(i)['pair_frame_indices']
                     for i in range(14)]
    other = _real_dataset(real_sav, seed=1)
    assert pairs != [other.prepare_data(i)['pair_frame_indices']
                     for i in range(14)]


def test_sav_pair_rules():
    rule = SampleSAVFramePair(min_gap=3, max_gap=4)
    vis = [0, 1, 2, 5, 9]
    allowed = {(1, 5), (2, 5), (5, 9)}
    seen = {rule.choose(vis, np.random.default_rng(s)) for s in range(60)}
    assert seen == allowed
    assert SampleSAVFramePair(rule='first_last').choose(vis, None) == (0, 9)
    assert SampleSAVFramePair(min_gap=10).choose(vis, np.random.default_rng(
        0)) is None


def test_sav_release_first_last(real_sav):
    ds = _real_dataset(real_sav, dict(type='SampleSAVFramePair',
                                      rule='first_last'))
    ann = json.loads((real_sav / 'sav_train' / 'sav_000' /
                      'sav_000001_manual.json').read_text())
    visible = [t for t, fr in enumerate(ann['masklet'])
               if _decode_rle(fr[2]).any()]
    s = ds.prepare_data(11)                     # manual masklet 2
    assert s['pair_frame_indices'] == [visible[0], visible[-1]]


# ---------------------------------------------------------------------------
# SA-1B
# ---------------------------------------------------------------------------
def test_sa1b_index_from_json_only(cfg, data, monkeypatch):
    root, manifest = data
    entry = manifest['datasets']['sa1b']

    def no_open(*a, **k):
        raise AssertionError('the index must not open images')
    monkeypatch.setattr(Image, 'open', no_open)
    ds = build(cfg, data, 'mc_sa1b')
    monkeypatch.undo()
    stems = sorted(i['id'] for i in entry['images'])
    expected = []
    for stem in stems:
        d = json.loads((root / entry['json_dir'] / f'{stem}.json').read_text())
        expected += [(stem, k) for k, a in enumerate(d['annotations'])
                     if a['area'] >= 1]
    assert [ds.get_data_info(i)['record_id'] for i in range(len(ds))] == \
        [f'{s}#{k}' for s, k in expected]
    assert ds.index_stats == {'annotation_below_min_area': 1}
    # compact: 8 bytes per sample + the length array + per-image arrays
    assert ds.sample_image.dtype == ds.sample_ann.dtype == np.int32
    per_image = ds.stems.nbytes + ds.image_hw.nbytes
    assert ds.index_nbytes() == 12 * len(ds) + per_image
    # caps and the minimum area
    assert len(build(cfg, data, 'mc_sa1b', max_images=1)) == sum(
        s == stems[0] for s, _ in expected)
    areas = []
    for stem in stems:
        d = json.loads((root / entry['json_dir'] / f'{stem}.json').read_text())
        areas += [a['area'] for a in d['annotations']]
    threshold = int(np.median(areas)) + 1
    big = build(cfg, data, 'mc_sa1b', min_area=threshold)
    n_big = sum(a >= threshold for a in areas)
    assert len(big) == n_big and 0 < n_big < len(expected)


def test_sa1b_outputs(cfg, data):
    root, _ = data
    ds = build(cfg, data, 'mc_sa1b')
    for idx in (0, len(ds) - 1):
        s = ds.prepare_data(idx)
        info = ds.get_data_info(idx)
        d = json.loads(open(info['json_path']).read())
        seg = d['annotations'][info['ann_index']]['segmentation']
        mask = _decode_rle(seg)
        image = Image.open(info['img_path']).convert('RGB')
        check_frame(s, 1, image, mask)
        for key in ('pixel_values', 'g_pixel_values', 'prompt_masks',
                    'masks'):
            assert s[f'{key}2'] is s[f'{key}1']
        assert s['dataset_type'] == 'sa1b' and not s['has_paired_frame']


# ---------------------------------------------------------------------------
# OpenImage
# ---------------------------------------------------------------------------
def test_openimage_rows_and_bad_files(cfg, data):
    root, manifest = data
    entry = manifest['datasets']['openimage']
    ds = build(cfg, data, 'mc_openimage')
    raw = (root / entry['csv']).read_bytes()
    starts = [i + 1 for i, b in enumerate(raw) if b == 10][:-1]
    assert ds.offsets.dtype == np.uint32
    assert ds.offsets.tolist() == starts and len(ds) == entry['num_rows']
    assert ds.index_nbytes() == 8 * len(ds)
    rows = list(csv.DictReader(open(root / entry['csv'])))
    for i in (1, 7):
        info = ds.get_data_info(i)
        assert info['mask_path'].endswith(rows[i]['MaskPath'])
        assert info['img_path'].endswith(f"{rows[i]['ImageID']}.jpg")
    report = check_dataset(ds)
    bad = {b['record'] for b in manifest['bad_records']
           if b['dataset'] == 'openimage'}
    assert dict(report.problems) == {'missing_mask': 1, 'corrupt_image': 3}
    assert report.ok == len(ds) - len(bad)
    # a bad record is replaced by another one and counted, never sample 0
    s = ds[0]
    assert s['data_stats'] == {'skipped/missing_mask': 1}
    assert s['meta']['sample_idx'] not in bad
    image = Image.open(s['meta']['img_path']).convert('RGB')
    row = rows[s['meta']['sample_idx']]
    mask = np.asarray(Image.open(root / entry['mask_dir'] / row['MaskPath'])
                      .convert('L')) > 0
    check_frame(s, 1, image, mask.astype(np.uint8))
    # oversized files are skipped with a count
    small = build(cfg, data, 'mc_openimage', pipeline_overrides=dict(
        LoadImageAndMaskPNG=dict(max_file_bytes=100)))
    # (the image is checked first: row 0's missing mask is never reached)
    assert dict(check_dataset(small).problems) == {'oversized_file': 10}
    assert len(build(cfg, data, 'mc_openimage', max_samples=3)) == 3


def test_csv_row_offsets_crlf_and_chunks(tmp_path):
    path = tmp_path / 'x.csv'
    path.write_bytes(b'A,B\r\n1,2\r\n\r\n33,4\n5,6')
    header, offsets = csv_row_offsets(str(path), chunk_size=3)
    assert header == ['A', 'B'] and offsets.tolist() == [5, 12, 17]
    assert csv_row_offsets(str(path), max_rows=2)[1].tolist() == [5, 12]


# ---------------------------------------------------------------------------
# RefCOCO captions, Describe Anything
# ---------------------------------------------------------------------------
def test_refcoco_caption_stream(cfg, data):
    import pickle
    root, _ = data
    rc = root / 'ref_seg' / 'refcoco'
    refs = pickle.load(open(rc / 'refs(unc).p', 'rb'), encoding='latin1')
    per_obj = {}
    for r in refs:
        if r['split'] == 'train':
            per_obj[(r['image_id'], r['ann_id'])] = [
                s['raw'].lower() for s in r['sentences']]
    ds = build(cfg, data, 'mc_refcoco_caption')
    captions = sorted(ds.get_data_info(i)['caption'] for i in range(len(ds)))
    assert captions == sorted(t for v in per_obj.values() for t in v)
    one = build(cfg, data, 'mc_refcoco_caption', expressions='one_per_image')
    assert len(one) == len({img for img, _ in per_obj})
    s = ds.prepare_data(0)
    info = ds.get_data_info(0)
    inst = json.loads((rc / 'instances.json').read_text())
    seg = info['segmentations'][0]
    h, w = info['ori_shape']
    mask = mask_utils.decode(mask_utils.merge(
        mask_utils.frPyObjects(seg, h, w)))
    check_frame(s, 1, Image.open(info['img_path']).convert('RGB'), mask)
    assert s['caption'] == info['caption'] and s['dataset_type'] == 'refcoco'
    assert any(a['segmentation'] == seg for a in inst['annotations'])


def test_describe_anything_captions(cfg, data):
    root, manifest = data
    ds = build(cfg, data, 'mc_describe_anything')
    dam_root = root / manifest['datasets']['describe_anything']['root']
    for idx in (0, len(ds) - 1):
        s = ds.prepare_data(idx)
        info = ds.get_data_info(idx)
        subset, rest = info['record_id'].split('/', 1)
        sid, k = rest.rsplit('#', 1)
        ann = json.loads((dam_root / subset / 'annotations.json').read_text())
        regions = ann[sid] if isinstance(ann[sid], list) else [ann[sid]]
        region = regions[int(k)]
        assert s['caption'] == region['caption'].strip()
        assert s['dataset_type'] == f'dam_{subset}'
        mask = _decode_rle(region['mask_rle'])
        assert torch.equal(s['prompt_masks1'], pool_prompt_masks(
            torch.from_numpy(mask)[None], mode='area')[0])
        assert torch.equal(s['masks1'], nearest_mask(mask))
        assert s['pixel_values1'].dtype == torch.float32


# ---------------------------------------------------------------------------
# Routes, grid rule, mix
# ---------------------------------------------------------------------------
def test_option_a_versus_direct(cfg, data):
    direct = build(cfg, data, 'mc_sa1b')
    option_a = build(cfg, data, 'mc_sa1b', pipeline_overrides=dict(
        MaskCaptionOutputs=dict(route='option_a')))
    d, a = direct.prepare_data(0), option_a.prepare_data(0)
    assert set(a) >= {'image1', 'image2', 'mask1', 'mask2',
                      'g_pixel_values1', 'g_pixel_values2'}
    assert 'pixel_values1' not in a
    assert a['image1'].shape == (3, 1024, 1024)
    assert a['image1'].dtype == torch.float32
    # equal: the SAM2 input and the 1024 GT mask
    assert torch.equal(a['g_pixel_values1'], d['g_pixel_values1'])
    assert torch.equal(a['mask1'], d['masks1'])
    # the preprocessor's derivation differs from the direct tensors:
    # 448 image (bilinear 1024 -> 448 of a bilinear 1024 image vs one PIL
    # bilinear resize) and grid (nearest of the 1024 mask vs nearest of
    # the original mask)
    der = derive_mask_caption_batch(a['image1'][None], a['mask1'][None])
    diff = (der['pixel_values'][0] - d['pixel_values1']).abs()
    assert 0 < float(diff.mean()) < 0.05 and float(diff.max()) < 2.0
    cells = int((der['prompt_masks'][0] != d['prompt_masks1']).sum())
    assert cells <= 16
    assert der['prompt_masks'][0].any() and d['prompt_masks1'].any()


def test_grid_rule_and_k0_counts():
    image = Image.new('RGB', (160, 120), (10, 20, 30))
    mask = np.zeros((120, 160), np.uint8)
    mask[1:3, 1:3] = 1                   # vanishes on the 16 x 16 grid
    base = dict(image=image, masks=torch.from_numpy(mask[None].copy()),
                dataset_type='x')
    out = MaskCaptionOutputs()(dict(base))
    assert not out['prompt_masks1'].any()
    assert out['data_stats'] == {'prompt_k0_1': 1}
    fixed = MaskCaptionOutputs(ensure_nonempty=True)(dict(base))
    assert fixed['prompt_masks1'].sum() == 1 and fixed['prompt_masks1'][0, 0]
    assert fixed['data_stats'] == {'prompt_k0_1': 1, 'prompt_repaired': 1}
    big = mask.copy()
    big[:60, :80] = 1
    area = MaskCaptionOutputs(prompt_mode='area')(dict(
        base, masks=torch.from_numpy(big[None].copy())))
    assert int(area['prompt_masks1'].sum()) == 64   # the top-left quarter
    assert area['prompt_masks1'][:8, :8].all()
    with pytest.raises(RecordError, match='its image') as exc:
        MaskCaptionOutputs()(dict(base, masks=torch.zeros(1, 10, 10)))
    assert exc.value.reason == 'size_mismatch'


def test_owner_mix(cfg, data):
    import projects.sa2va.datasets  # noqa: F401
    from projects.sa2va.registry import DATASETS
    root, _ = data
    mix = copy.deepcopy(cfg.mc_mix_savALL_sa1b2500_oi200k.to_dict())
    assert [d['type'] for d in mix['datasets']] == [
        'SAVPairNpzDataset', 'SA1BDataset', 'OpenImageSegDataset']
    assert mix['datasets'][1]['max_images'] == 2500
    assert mix['datasets'][2]['max_samples'] == 200000
    mix['datasets'][1]['max_images'] = 1
    mix['datasets'][2]['max_samples'] = 4
    mix['data_root_prefix'] = ('./data/', f'{root}/')
    ds = DATASETS.build(mix)
    assert [r['samples'] for r in ds.summary()] == [
        5, len(build(cfg, data, 'mc_sa1b', max_images=1)), 4]
    assert cfg.mc_refcoco_stream['type'] == 'RefCOCOCaptionDataset'
    assert len(ds.modality_length) == len(ds)
    assert os.path.basename(cfg.mc_sav_npz['data_root'].rstrip('/')) == \
        'sav_npz'
