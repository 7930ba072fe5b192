"""One generated sample set per test session (default options)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope='session')
def sample(tmp_path_factory):
    """``(root Path, manifest dict)`` of ``make_sample_data(seed=0)``."""
    from projects.sa2va.sample_data import make_sample_data
    root = tmp_path_factory.mktemp('sample')
    manifest = make_sample_data(root, seed=0)
    return root, manifest
