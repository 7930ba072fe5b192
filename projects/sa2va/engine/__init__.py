"""Engine parts of the plugin: hooks."""
from .hooks import DataStatsHook  # noqa: F401
from .ema import CycleEMAHook  # noqa: F401
from .grad_surgery import GradSurgeryOptimWrapper, combine_gradients  # noqa: F401
from .cycle_eval import CycleRefCOCOEvalHook, kept_checkpoint_paths  # noqa: F401
from .checkpoint import (get_rng_state, load_checkpoint_file,  # noqa: F401
                         set_rng_state, to_weights_only)
from .loops import (InfiniteDataIterator,  # noqa: F401
                    ResumableEpochBasedTrainLoop, ResumableIterBasedTrainLoop)
from .schedules import WarmupDecayLR, simulate_lr  # noqa: F401
from .start_summary import StartSummaryHook  # noqa: F401
from .visbackend import TensorboardIfInstalled  # noqa: F401
from .runner import Sa2VARunner, resumable_loop_cfg  # noqa: F401
from .strategies import (apply_strategy, check_strategy_device,  # noqa: F401
                         load_strategy)
