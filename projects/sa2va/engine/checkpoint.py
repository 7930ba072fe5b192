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

import os
import os.path as osp
import pickle
import random
import re
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


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: the message names the file and the
    problem (empty, truncated, refused by weights-only loading, missing
    parts, shapes or values that do not fit)."""


def safe_torch_load(filename: str, map_location: Any = 'cpu') -> Any:
    """``torch.load(filename, weights_only=True)`` with errors that name the
    file.

    Nothing is allow-listed: a file whose pickle needs any Python global
    beyond tensors and plain containers is refused before it runs, on every
    torch version (the argument is passed explicitly, torch < 2.6 defaults
    to ``False``).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is empty, truncated or not a torch file,
            or its pickle needs a Python global (named).
    """
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename} does not exist')
    if osp.getsize(filename) == 0:
        raise CheckpointError(f'{filename} is empty (0 bytes): a save that '
                              f'never finished, or a failed copy')
    try:
        return torch.load(filename, map_location=map_location,
                          weights_only=True)
    except Exception as err:  # RuntimeError, EOFError, KeyError, Unpickling
        text = str(err)
        refused = re.search(r'GLOBAL (\S+)', text)
        if isinstance(err, pickle.UnpicklingError) and refused:
            raise CheckpointError(
                f'{filename} is refused by torch.load(weights_only=True): it '
                f'needs the Python global {refused.group(1)}, which could run '
                f'code while loading. Checkpoints written by Sa2VARunner hold '
                f'only plain types; a checkpoint from another writer must be '
                f'converted by someone who trusts it.') from None
        reason = text.split('WeightsUnpickler error:')[-1].strip()
        reason = (reason.splitlines() or [''])[0][:200]
        raise CheckpointError(
            f'{filename} is not a readable torch checkpoint (truncated, '
            f'corrupt or not written by torch.save; {osp.getsize(filename)} '
            f'bytes): {type(err).__name__}: {reason}') from None


def load_checkpoint_file(filename: str, map_location: Any = 'cpu') -> dict:
    """Load a local run checkpoint with :func:`safe_torch_load`.

    Args:
        filename: a ``.pth`` written by ``Sa2VARunner``.
        map_location: as ``torch.load``.

    Returns:
        the checkpoint dict, ``HistoryBuffer`` entries rebuilt.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: as :func:`safe_torch_load`, or the file does not
            hold a dict.
    """
    checkpoint = safe_torch_load(filename, map_location)
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f'{filename} holds a {type(checkpoint).__name__}'
                              f', not a checkpoint dict')
    return from_weights_only(checkpoint)


def check_finite(state: dict, source: str, allow: bool = False) -> list:
    """Names of the floating-point tensors of ``state`` holding NaN or Inf.

    Args:
        state: ``{name: tensor}`` (other values are ignored).
        source: the file, for the message.
        allow: return the names (the caller warns) instead of raising.

    Raises:
        CheckpointError: naming ``source`` and the first tensors, unless
            ``allow``.
    """
    bad = [k for k, v in state.items()
           if isinstance(v, torch.Tensor) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if bad and not allow:
        raise CheckpointError(
            f'{source}: {len(bad)} tensor(s) hold NaN or Inf values, e.g. '
            f'{bad[:5]} (a diverged run?); allow_nonfinite_weights=True '
            f'(tools/train.py --allow-nonfinite-weights) loads them anyway')
    return bad


def check_shapes(state: dict, own: dict, source: str) -> None:
    """Raise :class:`CheckpointError` naming ``source`` and every tensor of
    ``state`` whose shape differs from the same key of ``own`` (keys only
    in one of them are not checked here)."""
    bad = [f'{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}'
           for k, v in state.items()
           if k in own and isinstance(v, torch.Tensor)
           and tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise CheckpointError(
            f'{source} does not fit the model: {len(bad)} tensor(s) of '
            f'another shape: {bad[:10]} (a checkpoint of another model '
            f'size or config?)')


def fsync_replace(tmp: str, final: str) -> None:
    """Make the complete file ``tmp`` the file ``final`` durably: fsync its
    data, ``os.replace`` it (atomic on one file system), fsync the
    directory so the rename itself survives a crash."""
    with open(tmp, 'rb+') as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    _fsync_dir(osp.dirname(osp.abspath(final)))


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through ``<path>.tmp-<pid>`` and
    :func:`fsync_replace` (readers see the old or the new text, never a
    part)."""
    tmp = f'{path}.tmp-{os.getpid()}'
    with open(tmp, 'w') as f:
        f.write(text)
    fsync_replace(tmp, path)


_PARTIAL = re.compile(r'\.tmp-(\d+)$')


def remove_partial_files(directory: str) -> list:
    """Delete the ``*.tmp-<pid>`` files in ``directory`` left by saves that
    were killed (a live process's own temporary files, ``<pid>`` equal to
    this process's id, are kept). Returns the removed paths."""
    removed = []
    if not osp.isdir(directory):
        return removed
    for name in sorted(os.listdir(directory)):
        match = _PARTIAL.search(name)
        path = osp.join(directory, name)
        if match and int(match.group(1)) != os.getpid() and osp.isfile(path):
            os.remove(path)
            removed.append(path)
    return removed


def _mmengine_local_loader(filename: str, map_location=None) -> dict:
    return load_checkpoint_file(osp.expanduser(filename), map_location)


def install_weights_only_loader() -> None:
    """Make mmengine load every local checkpoint with
    :func:`load_checkpoint_file` (weights-only, errors naming the file).

    mmengine's local loader calls ``torch.load`` without ``weights_only``
    (torch < 2.6: a full unpickler); it serves ``init_cfg=dict(
    type='Pretrained')``, ``mmengine.runner.load_checkpoint`` and the
    FlexibleRunner's DDP / FSDP strategies. Installed when this module is
    imported (with ``projects.sa2va.engine``: every ``Sa2VARunner`` run and
    ``tools/train.py``)."""
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', loader=_mmengine_local_loader,
                                     force=True)


install_weights_only_loader()


def check_build_cfg(cfg: Any, source: str, registry) -> None:
    """Refuse a build dict read from a file (an export's
    ``sa2va_export.json``) that could name code to run.

    Every ``type`` anywhere in ``cfg`` must be a plain name registered in
    ``registry`` or its parents: mmengine's ``Registry.get`` imports any
    dotted name it does not know (``'subprocess.run'``) and the build calls
    it with the dict's other keys. Values under a ``config`` key are data
    for a constructor (an InternVL / SAM2 configuration, where ``type`` is
    e.g. a RoPE scaling kind) and are not checked for types. Keys containing
    ``trust_remote_code`` must not be true anywhere (that would import
    Python files of a directory).

    Raises:
        CheckpointError: naming ``source`` and the offending entry.
    """
    registry.import_from_location()

    def registered(name) -> bool:
        reg = registry
        while reg is not None:
            if name in reg.module_dict:
                return True
            reg = reg.parent
        return False

    def walk(node, where: str, types: bool = True) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                here = f'{where}.{key}' if where else str(key)
                if types and key == 'type' and not (isinstance(value, str)
                                          and '.' not in value
                                          and registered(value)):
                    raise CheckpointError(
                        f'{source}: {here} = {value!r} is not a type '
                        f'registered in {registry.name} (a file may only name '
                        f'registered types; any other would be imported and '
                        f'called)')
                if 'trust_remote_code' in str(key) and value:
                    raise CheckpointError(
                        f'{source}: {here} is true: a file may not ask to run '
                        f'the Python code of a directory')
                walk(value, here, types and key != 'config')
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                walk(value, f'{where}[{i}]', types)

    walk(cfg, '')
