"""Run checkpoints that load under ``torch.load(weights_only=True)``.

mmengine puts Python objects into a checkpoint besides tensors: the message
hub's ``HistoryBuffer`` objects (whose pickle calls ``builtins.getattr`` on
bound methods), numpy arrays and scalars (``eta``). Allowing those globals
would let a checkpoint run code at load time, so instead the checkpoint is
written in plain types (dicts, lists, tuples, str, int, float, bool, None,
tensors) and turned back into the objects mmengine expects after a safe load.
Nothing is allow-listed, globally or locally.

Also here: the random-number state of the process (torch CPU and CUDA, numpy
legacy global, Python ``random``) as plain types, so that a resumed run draws
the same dropout masks and mask-loss sample points as an uninterrupted one.
"""
from __future__ import annotations

import os.path as osp
import pickle
import random
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

# marker key of a HistoryBuffer written as a plain dict
_HISTORY = '__sa2va_history_buffer__'


def to_weights_only(obj: Any) -> Any:
    """``obj`` with numpy and ``HistoryBuffer`` values made plain.

    ``np.ndarray`` -> ``torch.Tensor`` (same dtype and shape), numpy scalars
    -> Python numbers, ``HistoryBuffer`` -> ``{marker: True, 'log': (n,)
    tensor, 'count': (n,) tensor (their numpy dtypes), 'max_length': int}``;
    dicts (type kept for ``OrderedDict``), lists and tuples are walked,
    anything else is returned as is (a later weights-only load names what is
    still unsafe).
    """
    if isinstance(obj, HistoryBuffer):
        log, count = obj.data
        return {_HISTORY: True,
                'log': torch.from_numpy(np.array(log)),
                'count': torch.from_numpy(np.array(count)),
                'max_length': int(obj.max_length)}
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        out = type(obj)() if type(obj) in (dict, OrderedDict) else {}
        for k, v in obj.items():
            out[k] = to_weights_only(v)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_weights_only(v) for v in obj)
    return obj


def from_weights_only(obj: Any) -> Any:
    """Inverse of :func:`to_weights_only` for ``HistoryBuffer`` entries
    (tensors stay tensors; mmengine's consumers accept them)."""
    if isinstance(obj, dict):
        if obj.get(_HISTORY) is True:
            return HistoryBuffer(obj['log'].numpy().tolist(),
                                 obj['count'].numpy().tolist(),
                                 max_length=obj['max_length'])
        out = type(obj)()
        for k, v in obj.items():
            out[k] = from_weights_only(v)
        return out
    if isinstance(obj, list):
        return [from_weights_only(v) for v in obj]
    return obj


def get_rng_state() -> dict:
    """The process's random state in plain types.

    Returns:
        ``{'torch': uint8 tensor, 'cuda': [uint8 tensor per device] (empty
        without CUDA), 'numpy': {'keys': (624,) int64 tensor, 'pos': int,
        'has_gauss': int, 'gauss': float}, 'python': tuple of ints}``.
    """
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    if name != 'MT19937':
        raise ValueError(f'unexpected numpy global generator {name}')
    version, internal, gauss_next = random.getstate()
    cuda = (torch.cuda.get_rng_state_all()
            if torch.cuda.is_available() and torch.cuda.is_initialized()
            else [])
    return dict(torch=torch.get_rng_state(), cuda=cuda,
                numpy=dict(keys=torch.from_numpy(keys.astype(np.int64)),
                           pos=int(pos), has_gauss=int(has_gauss),
                           gauss=float(gauss)),
                python=(version, tuple(internal), gauss_next))


def set_rng_state(state: dict) -> None:
    """Restore a :func:`get_rng_state` dict (CUDA states only when there are
    as many devices as saved)."""
    torch.set_rng_state(state['torch'].cpu())
    cuda = state.get('cuda') or []
    if cuda and torch.cuda.is_available() \
            and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    n = state['numpy']
    np.random.set_state(('MT19937', n['keys'].numpy().astype(np.uint32),
                         n['pos'], n['has_gauss'], n['gauss']))
    version, internal, gauss_next = state['python']
    random.setstate((version, tuple(internal), gauss_next))


def make_checkpoint_weights_only(checkpoint: dict) -> dict:
    """Make a runner checkpoint dict loadable with ``weights_only=True``
    (in place; ``meta`` and ``message_hub`` are rewritten, tensors kept)."""
    for key in ('meta', 'message_hub'):
        if key in checkpoint:
            checkpoint[key] = to_weights_only(checkpoint[key])
    return checkpoint


def load_checkpoint_file(filename: str, map_location: Any = 'cpu') -> dict:
    """Load a local run checkpoint with ``torch.load(weights_only=True)``.

    Args:
        filename: a ``.pth`` written by ``Sa2VARunner``.
        map_location: as ``torch.load``.

    Returns:
        the checkpoint dict, ``HistoryBuffer`` entries rebuilt.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file holds Python objects a weights-only load refuses
            (e.g. a checkpoint written by mmengine's plain Runner); the
            message names the file and the refused global.
    """
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename} does not exist')
    try:
        checkpoint = torch.load(filename, map_location=map_location,
                                weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).split('WeightsUnpickler error:')[-1].strip()
        raise ValueError(
            f'{filename} cannot be loaded with torch.load(weights_only=True): '
            f'{reason.splitlines()[0] if reason else err}. Checkpoints written '
            f'by Sa2VARunner hold only plain types; a checkpoint from another '
            f'writer must be converted by someone who trusts it.') from None
    return from_weights_only(checkpoint)
