"""Shared checks for model builders."""
from __future__ import annotations

from typing import Callable, Tuple


def created_parameter_dtypes(build: Callable[[], object]) -> Tuple[object, set]:
    """Run ``build()`` and record the dtype of every parameter registered while
    it runs. Returns ``(its result, set of dtypes)``."""
    from torch.nn.modules.module import register_module_parameter_registration_hook
    seen = set()
    handle = register_module_parameter_registration_hook(
        lambda module, name, param: seen.add(None if param is None else param.dtype))
    try:
        return build(), seen
    finally:
        handle.remove()
