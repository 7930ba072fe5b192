"""Engine parts of the plugin: hooks."""
from .hooks import DataStatsHook  # noqa: F401
from .ema import CycleEMAHook  # noqa: F401
