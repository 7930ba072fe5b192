"""Mask <-> caption family: SA-V npz pairs, SA-1B, OpenImage v7, and the
bad-record option."""
from __future__ import annotations

import csv
import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from projects.sa2va.sample_data import make_sample_data

from .helpers import check_rle, load_json, rgb_image


def test_sav_npz_pairs(sample):
    root, manifest = sample
    entry = manifest['datasets']['sav_npz']
    found = sorted(p.relative_to(root).as_posix()
                   for p in (root / entry['npz_dir']).glob(entry['pattern']))
    assert found == sorted(f['file'] for f in entry['files'])
    layouts = set()
    for info in entry['files']:
        with np.load(root / info['file']) as z:
            assert sorted(z.files) == ['frame1', 'frame2', 'mask1', 'mask2']
            f1, f2, m1, m2 = z['frame1'], z['frame2'], z['mask1'], z['mask2']
        layouts.add((info['frame_layout'], info['frame_max'],
                     info['mask_max']))
        if info['frame_layout'] == 'CHW':
            assert f1.shape == (3, 128, 128)
        else:
            assert f1.shape == (128, 128, 3)
        assert f1.shape == f2.shape and m1.shape == m2.shape == (128, 128)
        top = 255 if info['frame_max'] == 255 else 1.0
        assert f1.dtype == (np.uint8 if top == 255 else np.float32)
        assert 0 <= f1.min() and f1.max() <= top and f1.max() > top / 2
        assert set(np.unique(m1)) == {0, info['mask_max']}
        assert set(np.unique(m2)) == {0, info['mask_max']}
        assert not np.array_equal(f1, f2)          # two different frames
        assert info['frames'][0] < info['frames'][1]
    assert len(layouts) == 4


def test_sa1b(sample):
    root, manifest = sample
    entry = manifest['datasets']['sa1b']
    stems_js = sorted(p.stem for p in (root / entry['json_dir']).iterdir())
    stems_img = sorted(p.stem for p in (root / entry['image_dir']).iterdir())
    assert stems_js == stems_img and len(stems_js) == 3
    shapes = set()
    for stem in stems_js:
        d = load_json(root, f"{entry['json_dir']}/{stem}.json")
        assert list(d) == ['image', 'annotations']
        im = d['image']
        assert set(im) == {'image_id', 'width', 'height', 'file_name'}
        assert im['file_name'] == f'{stem}.jpg' == f"sa_{im['image_id']}.jpg"
        img = rgb_image(root / entry['image_dir'] / f'{stem}.jpg')
        assert img.shape[:2] == (im['height'], im['width'])
        shapes.add(img.shape[:2])
        for a in d['annotations']:
            assert set(a) == {'id', 'segmentation', 'bbox', 'area',
                              'predicted_iou', 'stability_score', 'crop_box',
                              'point_coords'}
            m = check_rle(a['segmentation'], im['height'], im['width'])
            assert m.sum() == a['area'] > 0
            (px, py), = a['point_coords']
            assert m[int(py), int(px)] == 1
            x, y, w, h = a['bbox']
            assert m[:, int(x):int(x + w)].sum() == a['area']
        # nested masks: the last one lies inside the first
        first = check_rle(d['annotations'][0]['segmentation'], im['height'],
                          im['width'])
        part = check_rle(d['annotations'][-1]['segmentation'], im['height'],
                         im['width'])
        assert (part <= first).all() and part.sum() < first.sum()
    assert (120, 160) in shapes and (160, 120) in shapes


def test_openimage(sample):
    root, manifest = sample
    entry = manifest['datasets']['openimage']
    rows = list(csv.DictReader(io.StringIO((root / entry['csv']).read_text())))
    assert list(rows[0]) == ['MaskPath', 'ImageID', 'LabelName', 'BoxID',
                             'BoxXMin', 'BoxXMax', 'BoxYMin', 'BoxYMax',
                             'PredictedIoU', 'Clicks']
    assert len(rows) == entry['num_rows']
    classes = dict(csv.reader(io.StringIO(
        (root / entry['class_descriptions']).read_text())))
    assert classes.pop('LabelName') == 'DisplayName'
    for r in rows:
        assert r['LabelName'] in classes and r['LabelName'].startswith('/m/')
        assert r['MaskPath'].startswith(r['ImageID'] + '_')
        img = rgb_image(root / entry['image_dir'] / f"{r['ImageID']}.jpg")
        with Image.open(root / entry['mask_dir'] / r['MaskPath']) as mk:
            assert mk.mode == '1' and mk.size == img.shape[1::-1]
            mask = np.asarray(mk.convert('L')) > 0
        assert mask.any()
        h, w = mask.shape
        ys, xs = np.nonzero(mask)
        assert abs(float(r['BoxXMin']) - xs.min() / w) < 1e-5
        assert abs(float(r['BoxYMax']) - (ys.max() + 1) / h) < 1e-5
        for click in r['Clicks'].split(';'):
            cx, cy = map(float, click.split())
            assert mask[int(cy * h), int(cx * w)]


def test_refcoco_caption_points_at_refseg(sample):
    root, manifest = sample
    rc = manifest['datasets']['refcoco_caption']
    assert rc['data_root'] == 'ref_seg/refcoco'
    assert (root / rc['data_root'] / rc['split_file']).is_file()


def test_bad_records_written_and_listed(tmp_path):
    m = make_sample_data(tmp_path, families=['mask_caption', 'vqa'],
                         bad_records=True)
    cases = {(b['dataset'], b['case'].split(':')[0]) for b in m['bad_records']}
    assert ('openimage', 'mask file missing') in cases
    assert ('openimage', 'truncated (corrupt) JPEG') in cases
    assert ('sa1b', 'annotation with area 0 (empty mask)') in cases
    assert ('llava', 'image missing') in cases
    assert ('sav_npz', 'truncated npz (corrupt zip)') in cases
    for b in m['bad_records']:
        if b['case'].startswith(('mask file missing', 'image missing')):
            missing = b['case'].split(': ')[1]
            assert not (tmp_path / missing).exists()
            assert missing not in m['files']
    npz = next(b['file'] for b in m['bad_records']
               if b['dataset'] == 'sav_npz')
    with pytest.raises((zipfile.BadZipFile, ValueError, OSError, EOFError)):
        np.load(tmp_path / npz)['frame1']
    img = next(b['case'].split(': ')[1] for b in m['bad_records']
               if b['case'].startswith('truncated (corrupt) JPEG'))
    with pytest.raises(OSError):
        Image.open(tmp_path / img).convert('RGB')
    # bad rows are ordinary rows of the CSV, the other rows stay good
    csv_rows = (tmp_path / m['datasets']['openimage']['csv']).read_text(
    ).strip().splitlines()[1:]
    bad_rows = {b['record'] for b in m['bad_records']
                if b['dataset'] == 'openimage'}
    assert len(csv_rows) == m['datasets']['openimage']['num_rows']
    assert 0 < len(bad_rows) < len(csv_rows)
