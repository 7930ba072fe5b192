"""Parameter dtypes of config-built models: names from configs, and building
a model directly in its target dtype."""
from contextlib import contextmanager
from typing import Union

import torch

#: names a config may give for ``torch_dtype``.
DTYPES = {'float32': torch.float32, 'fp32': torch.float32, 'bfloat16': torch.bfloat16,
          'bf16': torch.bfloat16, 'float16': torch.float16, 'fp16': torch.float16}


def as_dtype(value: Union[None, str, torch.dtype]):
    """A torch dtype from a config value (``'bfloat16'``, ``'bf16'``, a dtype);
    None and ``'auto'`` pass through.

    Raises:
        ValueError: an unknown name.
    """
    if value is None or isinstance(value, torch.dtype) or value == 'auto':
        return value
    if value not in DTYPES:
        raise ValueError(f'unknown torch_dtype {value!r}; use one of {sorted(DTYPES)}')
    return DTYPES[value]


@contextmanager
def default_dtype(dtype):
    """``torch``'s default dtype set to ``dtype`` (a floating dtype) inside the
    block, so parameters are created in it (a 7B model built in fp32 and then
    cast would hold twice its bf16 size at the peak); a no-op for None /
    ``'auto'``."""
    if dtype in (None, 'auto') or dtype == torch.get_default_dtype():
        yield
        return
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)
