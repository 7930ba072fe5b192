"""Engine parts of the plugin: hooks."""
from .hooks import DataStatsHook  # noqa: F401
