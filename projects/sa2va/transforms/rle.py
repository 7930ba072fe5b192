"""COCO's compressed RLE string codec (run lengths only), with the checks
:func:`~projects.sa2va.transforms.functional.decode_mask` needs before
handing a string to pycocotools."""
from __future__ import annotations

import numpy as np

__all__ = ['rle_counts_from_string']


def rle_counts_from_string(counts: str | bytes) -> np.ndarray:
    """Decode COCO's compressed RLE string into its run lengths.

    The codec: each count is a signed number in 5-bit groups (least
    significant first) stored as ``chr(48 + group | 0x20 if more)``; from
    the fourth count on, the value is a delta to the count two places back.

    Args:
        counts: the ``counts`` string (``str`` or ``bytes``, ASCII).

    Returns:
        ``(m,) int64`` run lengths, alternating 0-runs and 1-runs, starting
        with 0s (the first run may be 0).

    Raises:
        ValueError: characters outside the codec's range, a truncated last
            count, or a negative run length.
    """
    if isinstance(counts, str):
        try:
            raw = counts.encode('ascii')
        except UnicodeEncodeError as exc:
            raise ValueError(f'RLE counts string is not ASCII: {exc}') from None
    elif isinstance(counts, (bytes, bytearray)):
        raw = bytes(counts)
    else:
        raise TypeError(f'RLE counts must be str or bytes, got '
                        f'{type(counts).__name__}')
    if not raw:
        raise ValueError('RLE counts string is empty')
    c = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    if c.min() < 0 or c.max() > 63:
        bad = raw[int(np.flatnonzero((c < 0) | (c > 63))[0])]
        raise ValueError(f'RLE counts string has a character outside the '
                         f'COCO codec range: {chr(bad)!r}')
    ends = (c & 0x20) == 0
    if not ends[-1]:
        raise ValueError('RLE counts string is truncated (its last '
                         'character continues a number)')
    end_idx = np.flatnonzero(ends)
    starts = np.concatenate([[0], end_idx[:-1] + 1])
    group = np.repeat(np.arange(len(starts)), end_idx - starts + 1)
    k = np.arange(len(c)) - starts[group]
    values = np.add.reduceat((c & 0x1f) << (5 * k), starts)
    sign = (c[end_idx] & 0x10) != 0
    values = values - (sign.astype(np.int64) << (5 * (k[end_idx] + 1)))
    # Undo the delta coding: cnts[m] += cnts[m - 2] for m > 2.
    out = values.copy()
    if len(out) > 3:
        odd = out[3::2]
        out[3::2] = np.cumsum(odd) + out[1]
    if len(out) > 4:
        even = out[4::2]
        out[4::2] = np.cumsum(even) + out[2]
    if (out < 0).any():
        raise ValueError('RLE counts string decodes to a negative run length')
    return out
