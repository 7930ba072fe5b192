"""Sizes, seeding and manifest bookkeeping shared by the family writers."""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from .files import Writer


@dataclass(frozen=True)
class SampleSpec:
    """What to generate.

    Attributes:
        scale: multiplies every record count (``scale >= 1``).
        seed: base seed; each dataset draws from its own stream
            (:meth:`rng`), so writing a subset of families gives the same
            bytes for those families.
        realistic: benchmark sizes (640 x 480 pictures with 5-10 objects,
            1280 x 720 videos, 480 x 848 SA-V videos, 512 x 512 npz pairs)
            instead of the small defaults (160 x 120, 2-4 objects).
        bad_records: also write deliberately broken records (missing or
            corrupt files, empty masks), listed in the manifest's
            ``bad_records``; off by default so the sample set passes
            ``tools/check_data.py``.
    """
    scale: int = 1
    seed: int = 0
    realistic: bool = False
    bad_records: bool = False

    def rng(self, name: str) -> np.random.Generator:
        """Independent stream for one dataset, from ``(seed, name)``."""
        return np.random.default_rng([self.seed, zlib.crc32(name.encode())])

    def n(self, base: int) -> int:
        return int(base) * int(self.scale)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(width, height)`` of still pictures."""
        return (640, 480) if self.realistic else (160, 120)

    @property
    def objects(self) -> tuple[int, int]:
        """Inclusive range of objects per picture."""
        return (5, 10) if self.realistic else (2, 4)

    @property
    def object_frac(self) -> tuple[float, float]:
        """Object box side as a fraction of the picture side."""
        return (0.1, 0.22) if self.realistic else (0.2, 0.38)

    @property
    def video_size(self) -> tuple[int, int]:
        return (1280, 720) if self.realistic else (160, 120)

    @property
    def sav_size(self) -> tuple[int, int]:
        """SA-V videos are portrait like the real example (w 480, h 848)."""
        return (480, 848) if self.realistic else (96, 160)

    @property
    def npz_size(self) -> tuple[int, int]:
        return (512, 512) if self.realistic else (128, 128)

    n_frames: int = 8          # frames of a referring-VOS video (chat: +4)

    def n_objects(self, rng: np.random.Generator) -> int:
        lo, hi = self.objects
        return int(rng.integers(lo, hi + 1))


@dataclass
class Manifest:
    """Per-dataset paths (relative to the sample root), the deliberately
    awkward-but-valid cases and the broken records, for loader tests."""
    datasets: dict = field(default_factory=dict)
    awkward_cases: list = field(default_factory=list)
    bad_records: list = field(default_factory=list)

    def add(self, name: str, **entry) -> dict:
        self.datasets[name] = entry
        return entry

    def awkward(self, dataset: str, file: str, record, case: str) -> None:
        self.awkward_cases.append({'dataset': dataset, 'file': file,
                                   'record': record, 'case': case})

    def bad(self, dataset: str, file: str, record, case: str) -> None:
        self.bad_records.append({'dataset': dataset, 'file': file,
                                 'record': record, 'case': case})


@dataclass
class Context:
    """What every family writer receives."""
    writer: Writer
    spec: SampleSpec
    manifest: Manifest
    done: set = field(default_factory=set)

    def once(self, key: str) -> bool:
        """True the first time ``key`` is asked (shared sub-datasets)."""
        if key in self.done:
            return False
        self.done.add(key)
        return True


def picture(ctx: Context, rng: np.random.Generator, n_objects: int | None = None,
            min_frac: float | None = None, max_frac: float | None = None,
            special: tuple[str, ...] = (), size: tuple[int, int] | None = None,
            shapes=None):
    """A :class:`~.scenes.Scene` at the spec's picture size (or ``size``
    ``(w, h)``) with the spec's object count and object sizes unless given."""
    from .scenes import make_image_scene
    w, h = size or ctx.spec.image_size
    lo, hi = ctx.spec.object_frac
    return make_image_scene(
        rng, w, h, ctx.spec.n_objects(rng) if n_objects is None else n_objects,
        lo if min_frac is None else min_frac,
        hi if max_frac is None else max_frac, shapes=shapes, special=special)


def unique_ids(rng: np.random.Generator, n: int, low: int, high: int
               ) -> list[int]:
    """``n`` distinct integers in ``[low, high)``, in random order."""
    out: list[int] = []
    seen = set()
    while len(out) < n:
        v = int(rng.integers(low, high))
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out
