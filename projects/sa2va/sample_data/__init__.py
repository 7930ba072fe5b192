"""Sample data in the real on-disk formats of every Sa2VA dataset.

``make_sample_data(out_dir)`` writes a tiny (or, with ``realistic=True``,
benchmark-sized) copy of each dataset's layout under one root, so that a
config's ``data_root='data/sample'`` replaces the ``./data`` of the real
layout. See :mod:`.api` for the layout and the manifest.
"""
from .api import FAMILIES, make_sample_data  # noqa: F401
from .common import SampleSpec  # noqa: F401
