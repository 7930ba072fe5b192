"""Safetensors weights of a Hugging Face directory, read and written one
tensor at a time: ``model.safetensors``, or ``model-0000k-of-0000n.safetensors``
shards listed by ``model.safetensors.index.json`` (``weight_map``:
key -> shard file).
"""
from __future__ import annotations

import json
import os
import os.path as osp
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import torch
from torch import Tensor

__all__ = ['HFWeights', 'save_sharded', 'SINGLE_FILE', 'INDEX_FILE',
           'DEFAULT_MAX_SHARD_BYTES']

SINGLE_FILE = 'model.safetensors'
INDEX_FILE = 'model.safetensors.index.json'
#: shard size of the released models and of ``save_pretrained`` (5 GB)
DEFAULT_MAX_SHARD_BYTES = 5 * 10 ** 9
#: mode of every written file: readable by group and others (not 0600)
FILE_MODE = 0o644


class HFWeights:
    """Lazy view of a directory's safetensors weights.

    Args:
        hf_dir: the directory (single file or index + shards).

    Raises:
        FileNotFoundError: neither ``model.safetensors`` nor the index, or a
        shard the index names is absent.
    """

    def __init__(self, hf_dir: str):
        self.dir = os.fspath(hf_dir)
        index = osp.join(self.dir, INDEX_FILE)
        if osp.isfile(index):
            with open(index, encoding='utf-8') as f:
                weight_map = json.load(f).get('weight_map')
            if not isinstance(weight_map, dict) or not weight_map:
                raise ValueError(f'{index}: no weight_map')
            self.weight_map: Dict[str, str] = dict(weight_map)
        elif osp.isfile(osp.join(self.dir, SINGLE_FILE)):
            self.weight_map = None
        else:
            raise FileNotFoundError(f'{self.dir}: neither {SINGLE_FILE} nor {INDEX_FILE}')
        from safetensors import safe_open
        self._handles = {}
        files = sorted(set(self.weight_map.values())) if self.weight_map else [SINGLE_FILE]
        for name in files:
            path = osp.join(self.dir, name)
            if not osp.isfile(path):
                raise FileNotFoundError(f'{path}: named by {INDEX_FILE} but absent')
            self._handles[name] = safe_open(path, framework='pt', device='cpu')
        if self.weight_map is None:
            self.weight_map = {k: SINGLE_FILE for k in self._handles[SINGLE_FILE].keys()}
        else:
            for name, handle in self._handles.items():
                listed = {k for k, v in self.weight_map.items() if v == name}
                stored = set(handle.keys())
                if listed != stored:
                    raise ValueError(f'{osp.join(self.dir, name)}: holds '
                                     f'{sorted(stored - listed)[:5]} not in {INDEX_FILE} and '
                                     f'lacks {sorted(listed - stored)[:5]}')

    def keys(self) -> List[str]:
        return sorted(self.weight_map)

    def __contains__(self, key: str) -> bool:
        return key in self.weight_map

    def _slice(self, key: str):
        return self._handles[self.weight_map[key]].get_slice(key)

    def shape(self, key: str) -> Tuple[int, ...]:
        """Shape of ``key`` without reading it."""
        return tuple(self._slice(key).get_shape())

    def get(self, key: str, dtype: Optional[torch.dtype] = None) -> Tensor:
        """One tensor, cast to ``dtype`` (only this tensor is held)."""
        t = self._handles[self.weight_map[key]].get_tensor(key)
        return t if dtype is None or t.dtype == dtype else t.to(dtype)


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


def save_sharded(tensors: Iterable[Tuple[str, Tensor]], out_dir: str,
                 max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
                 metadata: Optional[Dict[str, str]] = None) -> List[str]:
    """Write ``(key, tensor)`` pairs as ``model.safetensors`` or, above
    ``max_shard_bytes``, as ``model-0000k-of-0000n.safetensors`` + the index.

    The tensors are consumed shard by shard (one shard's tensors in memory
    at a time); files are written to temporary names, renamed, and given
    mode 0644.

    Returns:
        the written file names.
    """
    from safetensors.torch import save_file
    os.makedirs(out_dir, exist_ok=True)
    meta = dict(metadata or {}, format='pt')
    shards: List[str] = []
    weight_map: Dict[str, str] = {}
    total = 0
    current: Dict[str, Tensor] = {}
    size = 0

    def flush():
        name = f'shard-{len(shards):05d}.tmp'
        save_file(current, osp.join(out_dir, name), metadata=meta)
        shards.append(name)
        for k in current:
            weight_map[k] = name

    for key, t in tensors:
        if key in weight_map or key in current:
            raise ValueError(f'duplicate key {key!r}')
        t = t.detach().to('cpu').contiguous()
        if current and size + _nbytes(t) > max_shard_bytes:
            flush()
            current, size = {}, 0
        current[key] = t
        size += _nbytes(t)
        total += _nbytes(t)
    if current or not shards:
        flush()
    n = len(shards)
    names = [SINGLE_FILE] if n == 1 else [
        f'model-{i + 1:05d}-of-{n:05d}.safetensors' for i in range(n)]
    for tmp, name in zip(shards, names):
        os.replace(osp.join(out_dir, tmp), osp.join(out_dir, name))
        os.chmod(osp.join(out_dir, name), FILE_MODE)
    stale = osp.join(out_dir, INDEX_FILE)
    if n == 1:
        if osp.exists(stale):
            os.remove(stale)
        return names
    rename = dict(zip(shards, names))
    index = dict(metadata=dict(total_size=total),
                 weight_map={k: rename[v] for k, v in sorted(weight_map.items())})
    with open(stale, 'w', encoding='utf-8') as f:
        json.dump(index, f, indent=2)
        f.write('\n')
    os.chmod(stale, FILE_MODE)
    return names + [INDEX_FILE]


def iter_state(state: Dict[str, Tensor]) -> Iterator[Tuple[str, Tensor]]:
    """``(key, tensor)`` in sorted key order."""
    for key in sorted(state):
        yield key, state[key]
