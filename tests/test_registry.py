"""The plugin's registries: children of mmengine's, lookups by string with
and without scope, classes as ``type``, lazy import from ``locations``."""
from __future__ import annotations

import subprocess
import sys

from mmengine.registry import DATASETS as ROOT_DATASETS
from mmengine.registry import TRANSFORMS as ROOT_TRANSFORMS
from mmengine.registry import DefaultScope

from projects.sa2va.registry import DATASETS, FUNCTIONS, MODELS, TRANSFORMS


def test_children_of_mmengine_roots():
    assert DATASETS.parent is ROOT_DATASETS
    assert ROOT_DATASETS._children['sa2va'] is DATASETS
    assert TRANSFORMS.scope == MODELS.scope == 'sa2va'


def test_build_by_string_scope_and_class():
    from projects.sa2va.transforms import DynamicTiles
    t1 = TRANSFORMS.build(dict(type='DynamicTiles', max_num=6))
    t2 = ROOT_TRANSFORMS.build(dict(type='sa2va.DynamicTiles', max_num=6))
    t3 = TRANSFORMS.build(dict(type=DynamicTiles, max_num=6))
    assert all(isinstance(t, DynamicTiles) and t.max_num == 6
               for t in (t1, t2, t3))
    with DefaultScope.overwrite_default_scope('sa2va'):
        t4 = ROOT_TRANSFORMS.build(dict(type='DynamicTiles'))
    assert isinstance(t4, DynamicTiles)
    assert FUNCTIONS.get('sa2va_collate_fn') is not None
    assert MODELS.get('Sa2VADataPreprocessor') is not None


def test_locations_import_lazily():
    code = ('import projects.sa2va.registry as r; '
            'import sys; assert "projects.sa2va.datasets" not in sys.modules; '
            'assert r.DATASETS.get("LLaVADataset") is not None; '
            'assert "projects.sa2va.datasets" in sys.modules')
    subprocess.run([sys.executable, '-c', code], check=True)
