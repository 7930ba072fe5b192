"""``TensorboardIfInstalled``: mmengine's TensorBoard backend when the
``tensorboard`` package is there (``pip install -e '.[tensorboard]'``), a
no-op otherwise, so ``configs/_base_/default_runtime.py`` can list it for
every run: the scalars go to ``<work_dir>/<timestamp>/vis_data/`` (view with
``tensorboard --logdir work_dirs``) next to ``scalars.json``."""
from __future__ import annotations

import importlib.util

from mmengine.logging import print_log
from mmengine.visualization import TensorboardVisBackend

from ..registry import VISBACKENDS


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package can be imported."""
    return importlib.util.find_spec('tensorboard') is not None


@VISBACKENDS.register_module()
class TensorboardIfInstalled(TensorboardVisBackend):
    """TensorBoard event files if ``tensorboard`` is installed, else
    nothing (one log line says so). Arguments as
    ``TensorboardVisBackend``."""

    def _init_env(self):
        if not tensorboard_available():
            self._tensorboard = None
            print_log('tensorboard is not installed: no TensorBoard event '
                      "files (pip install -e '.[tensorboard]')",
                      logger='current')
            return
        super()._init_env()

    def add_config(self, config, **kwargs) -> None:
        if self.experiment is not None:
            super().add_config(config, **kwargs)

    def add_image(self, name, image, step=0, **kwargs) -> None:
        if self.experiment is not None:
            super().add_image(name, image, step, **kwargs)

    def add_scalar(self, name, value, step=0, **kwargs) -> None:
        if self.experiment is not None:
            super().add_scalar(name, value, step, **kwargs)

    def add_scalars(self, scalar_dict, step=0, file_path=None,
                    **kwargs) -> None:
        if self.experiment is not None:
            super().add_scalars(scalar_dict, step, file_path, **kwargs)

    def close(self) -> None:
        if getattr(self, '_tensorboard', None) is not None:
            super().close()
