"""Sa2VA training plugin for MMEngine: InternVL + SAM2, six data families."""
from . import registry  # noqa: F401  (registers the ``sa2va`` scope)

__version__ = '0.1.0'
