"""Deterministic file writing and COCO mask encodings for the sample data.

Every file of a sample set goes through one :class:`Writer`, which records
the relative path of everything it writes (the manifest's ``files`` list)
and writes bytes that depend only on the content (no timestamps in tar or
npz members, fixed JPEG quality, sorted nothing that the real files keep in
order).

Mask encodings (``docs/datasets.md``), all produced with pycocotools
except the uncompressed counts, which are the same column-major runs
pycocotools decodes:

* :func:`rle_str`   ``{'size': [H, W], 'counts': str}``   (JSON files)
* :func:`rle_bytes` ``{'size': [H, W], 'counts': bytes}`` (Ref-YTVOS pickle)
* :func:`rle_uncompressed` ``{'size': [H, W], 'counts': [int, ...]}``
  (COCO crowd annotations)
"""
from __future__ import annotations

import io
import json
import pickle
import tarfile
import zipfile
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

JPEG_QUALITY = 90


# ---------------------------------------------------------------------------
# Mask encodings
# ---------------------------------------------------------------------------
def rle_bytes(mask: np.ndarray) -> dict:
    """Compressed COCO RLE of a ``(H, W)`` mask (non-zero = object).

    Returns:
        ``{'size': [H, W], 'counts': bytes}`` (pycocotools' own form).
    """
    mask = np.asfortranarray((np.asarray(mask) != 0).astype(np.uint8))
    rle = mask_utils.encode(mask)
    return {'size': [int(rle['size'][0]), int(rle['size'][1])],
            'counts': rle['counts']}


def rle_str(mask: np.ndarray) -> dict:
    """Like :func:`rle_bytes` with ``counts`` as an ASCII ``str`` (JSON)."""
    rle = rle_bytes(mask)
    rle['counts'] = rle['counts'].decode('ascii')
    return rle


def rle_uncompressed(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE: ``{'size': [H, W], 'counts': [int, ...]}``.

    Counts are run lengths over the mask flattened column-major, starting
    with a (possibly zero) run of 0s; they sum to ``H * W``.
    """
    mask = (np.asarray(mask) != 0)
    h, w = mask.shape
    flat = mask.flatten(order='F').astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        runs = [0] + runs
    return {'size': [int(h), int(w)], 'counts': [int(r) for r in runs]}


def bbox_of(mask: np.ndarray) -> list[float]:
    """COCO box ``[x, y, w, h]`` (floats, pixels) of the non-zero pixels."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
            float(ys.max() - ys.min() + 1)]


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------
def jpeg_bytes(image: np.ndarray) -> bytes:
    """Encode an ``(H, W, 3) uint8`` RGB array as baseline JPEG bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), 'RGB').save(
        buf, format='JPEG', quality=JPEG_QUALITY)
    return buf.getvalue()


class Writer:
    """Writes files under ``root`` and remembers their relative paths.

    All paths given to the methods are relative to ``root`` with ``/``
    separators; parent folders are created. ``files`` is the sorted list
    of everything written (the manifest's file list).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._files: set[str] = set()

    @property
    def files(self) -> list[str]:
        return sorted(self._files)

    def path(self, rel: str) -> Path:
        return self.root / rel

    def bytes(self, rel: str, data: bytes) -> str:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self._files.add(rel)
        return rel

    def absent(self, rel: str) -> str:
        """Make sure ``rel`` does not exist (a deliberately missing file;
        removes a stale copy from an earlier run)."""
        path = self.root / rel
        if path.is_file():
            path.unlink()
        return rel

    def json(self, rel: str, obj) -> str:
        """``json.dumps`` with the default separators (``", "``, ``": "``),
        as the real SA-V files are written."""
        return self.bytes(rel, json.dumps(obj).encode('utf-8'))

    def pickle(self, rel: str, obj, protocol: int = 2) -> str:
        """Protocol 2 by default (the refer pickles date from Python 2)."""
        return self.bytes(rel, pickle.dumps(obj, protocol=protocol))

    def jpeg(self, rel: str, image: np.ndarray) -> str:
        return self.bytes(rel, jpeg_bytes(image))

    def png(self, rel: str, image: Image.Image) -> str:
        buf = io.BytesIO()
        image.save(buf, format='PNG')
        return self.bytes(rel, buf.getvalue())

    def text(self, rel: str, text: str) -> str:
        return self.bytes(rel, text.encode('utf-8'))

    def tar(self, rel: str, members: Iterable[tuple[str, bytes]]) -> str:
        """Uncompressed ustar archive with fixed metadata (mtime 0,
        mode 0644, uid/gid 0, empty owner names)."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode='w', format=tarfile.USTAR_FORMAT
                          ) as tar:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mtime = 0
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
        return self.bytes(rel, buf.getvalue())

    def npz(self, rel: str, arrays: dict[str, np.ndarray]) -> str:
        """A ``numpy.savez``-compatible (uncompressed) archive whose zip
        entries carry a fixed date, so equal arrays give equal bytes."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, 'w', zipfile.ZIP_STORED) as zf:
            for key, arr in arrays.items():
                member = io.BytesIO()
                np.lib.format.write_array(member, np.asanyarray(arr),
                                          allow_pickle=False)
                info = zipfile.ZipInfo(key + '.npy',
                                       date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                zf.writestr(info, member.getvalue())
        return self.bytes(rel, buf.getvalue())

    def mp4(self, rel: str, frames: list[np.ndarray], fps: float = 24.0
            ) -> str:
        """MPEG-4 part 2 (``mp4v``) video of ``(H, W, 3) uint8`` RGB frames;
        OpenCV decodes exactly ``len(frames)`` frames back."""
        import cv2
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        h, w = frames[0].shape[:2]
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'),
                                 fps, (w, h))
        if not writer.isOpened():
            raise RuntimeError(f'OpenCV cannot write mp4v video {path}')
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
        self._files.add(rel)
        return rel
