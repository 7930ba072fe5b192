"""Sa2VA training plugin for MMEngine: InternVL + SAM2, six data families."""
import sys

from . import registry

__version__ = '0.1.0'

# mmengine resolves a scope name to the package ``<scope>.registry`` (it
# imports ``sa2va.registry`` whenever it switches to the ``sa2va`` scope).
# The plugin lives at ``projects.sa2va`` (the owner's layout), so the scope
# name is made importable as an alias of this package.
sys.modules.setdefault('sa2va', sys.modules[__name__])
sys.modules.setdefault('sa2va.registry', registry)
