"""make_sample_data: manifest, layout, determinism, CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from projects.sa2va.sample_data import FAMILIES, make_sample_data

from .helpers import tree_digest

REPO = Path(__file__).resolve().parents[2]

# Real relative paths (dataset-formats.md) that configs join to data_root.
EXPECTED_PATHS = [
    'osprey-724k/Osprey-724K/osprey_conversation.json',
    'osprey-724k/Osprey-724K/osprey_detail_description.json',
    'osprey-724k/Osprey-724K/osprey_short_form.json',
    'osprey-724k/Osprey-724K/osprey_part_level.json',
    'osprey-724k/Osprey-724K/osprey_lvis_positive_negative.json',
    'ref_seg/refcoco/instances.json', 'ref_seg/refcoco/refs(unc).p',
    'ref_seg/refcoco+/instances.json', 'ref_seg/refcoco+/refs(unc).p',
    'ref_seg/refcocog/instances.json', 'ref_seg/refcocog/refs(umd).p',
    'video_datas/mevis/train/meta_expressions.json',
    'video_datas/mevis/train/mask_dict.json',
    'video_datas/revos/meta_expressions_train_.json',
    'video_datas/revos/mask_dict.json',
    'video_datas/revos/mask_dict_foreground.json',
    'video_datas/rvos/meta_expressions/train/meta_expressions.json',
    'video_datas/rvos/mask_dict.pkl', 'video_datas/rvos/train/meta.json',
    'video_datas/sam_v_final_v3.json',
    'video_datas/chat_univi/video_chat.json',
    'glamm_data/annotations/RefCOCOg_GCG_train.json',
    'glamm_data/annotations/GranDf_HA_GCG_train.json',
    'glamm_data/annotations/flickr_mergedGT_GCG_train.json',
    'glamm_data/annotations/OpenPsgGCG_train.json',
    'llava_data/LLaVA-Instruct-150K/llava_v1_5_mix665k.json',
    'mask_caption/openimage_v7/train-annotations-object-segmentation.csv',
    'mask_caption/openimage_v7/oidv7-class-descriptions.csv',
]


def test_layout_and_manifest(sample):
    root, manifest = sample
    files = set(manifest['files'])
    for rel in EXPECTED_PATHS:
        assert rel in files and (root / rel).is_file(), rel
    for rel in manifest['files']:
        assert (root / rel).is_file(), rel
    written = json.loads((root / 'manifest.json').read_text())
    assert written['files'] == manifest['files']
    assert 'root' not in written       # no machine-specific path inside
    assert manifest['options']['families'] == list(FAMILIES)
    assert len(manifest['datasets']) == 25
    assert manifest['bad_records'] == []
    # every awkward case names a written file
    assert len(manifest['awkward_cases']) >= 20
    for case in manifest['awkward_cases']:
        assert case['file'] in files, case
    # images per folder follow the real naming
    assert any(f.startswith('osprey-724k/coco/train2014/COCO_train2014_0')
               for f in files)
    assert any(f.startswith('osprey-724k/coco/val2017/') for f in files)
    assert any(f.startswith('ref_seg/refcocog/coco2014/train2014/COCO_train'
                            '2014_') for f in files)


def test_same_seed_same_bytes_and_subsets(sample, tmp_path):
    root, manifest = sample
    again = make_sample_data(tmp_path / 'again', seed=0)
    assert again['files'] == manifest['files']
    assert tree_digest(tmp_path / 'again', again['files']) == \
        tree_digest(root, manifest['files'])
    # one family alone gives the same bytes as in the full set
    sub = make_sample_data(tmp_path / 'sub', seed=0, families=['gcg'])
    assert sub['files'] and all(f in manifest['files'] for f in sub['files'])
    assert tree_digest(tmp_path / 'sub', sub['files']) == \
        tree_digest(root, sub['files'])
    # another seed changes the content
    other = make_sample_data(tmp_path / 'other', seed=1, families=['gcg'])
    ann = 'glamm_data/annotations/GranDf_HA_GCG_train.json'
    assert (tmp_path / 'other' / ann).read_bytes() != \
        (tmp_path / 'sub' / ann).read_bytes()
    assert other['options']['seed'] == 1


def test_scale_multiplies_records(tmp_path):
    one = make_sample_data(tmp_path / 'a', families=['vqa'])
    two = make_sample_data(tmp_path / 'b', families=['vqa'], scale=2)
    assert two['datasets']['llava']['num_records'] == \
        2 * one['datasets']['llava']['num_records'] == 16
    assert two['datasets']['chat_univi']['num_records'] == 4


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='unknown families'):
        make_sample_data(tmp_path, families=['nope'])
    with pytest.raises(ValueError, match='scale'):
        make_sample_data(tmp_path, scale=0)


def test_cli_writes_a_family(tmp_path):
    out = tmp_path / 'cli'
    proc = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'make_sample_data.py'),
         '--out', str(out), '--families', 'refseg', '--seed', '3'],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert 'refcoco+' in proc.stdout
    manifest = json.loads((out / 'manifest.json').read_text())
    assert manifest['options']['seed'] == 3
    assert sorted(manifest['datasets']) == ['refcoco', 'refcoco+', 'refcocog']
    assert (out / 'ref_seg/refcoco/refs(unc).p').is_file()


def test_realistic_sizes(tmp_path):
    m = make_sample_data(tmp_path, families=['refseg'], realistic=True)
    assert m['options']['realistic'] is True
    inst = json.loads((tmp_path / 'ref_seg/refcoco/instances.json')
                      .read_text())
    assert {(i['width'], i['height']) for i in inst['images']} == {(640, 480)}
    per_image = {}
    for a in inst['annotations']:
        per_image[a['image_id']] = per_image.get(a['image_id'], 0) + 1
    assert all(5 <= n <= 10 for n in per_image.values()), per_image


def test_large_files_cycle_over_the_sample(sample, tmp_path):
    import shutil

    from projects.sa2va.sample_data import large
    root, manifest = sample
    work = tmp_path / 'work'
    for rel in ('osprey-724k/Osprey-724K/osprey_conversation.json',
                'mask_caption/openimage_v7/'
                'train-annotations-object-segmentation.csv'):
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / rel, work / rel)
    shutil.copytree(root / 'mask_caption/sa1b', work / 'mask_caption/sa1b')
    base = json.loads((work / 'osprey-724k/Osprey-724K/'
                               'osprey_conversation.json').read_text())
    path = large.write_large_osprey(work, 10)
    recs = json.loads(path.read_text())
    assert path.name == 'osprey_conversation_x10.json'
    assert [r['id'] for r in recs] == list(range(10))
    assert recs[4]['annotation'] == base[1]['annotation']
    assert list(recs[4]) == list(base[1])
    csv_path = large.write_large_openimage_csv(work, 7)
    lines = csv_path.read_text().strip().split('\n')
    src = (work / 'mask_caption/openimage_v7/'
                  'train-annotations-object-segmentation.csv').read_text()
    assert len(lines) == 8 and lines[0] == src.split('\n')[0]
    assert lines[1] == src.split('\n')[1]
    tree = large.write_large_sa1b(work, 5)
    assert sorted(p.name for p in (tree / 'js').iterdir()) == \
        [f'sa_{i}.json' for i in range(1, 6)]
    rec = json.loads((tree / 'js/sa_4.json').read_text())
    assert rec['image']['image_id'] == 4
    assert rec['image']['file_name'] == 'sa_4.jpg'
    assert (tree / 'img/sa_4.jpg').is_file()
