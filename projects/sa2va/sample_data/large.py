"""Large annotation files for index-memory benchmarks, built from a written
sample set without generating new pictures.

The records cycle over the sample set's own records (so every image / mask
they name exists and decodes), with fresh ids; files are streamed, so a
1,000,000-record file needs little memory to write. Output sits next to
the sample files and is *not* in ``manifest.json``.

* :func:`write_large_osprey` -> ``osprey-724k/Osprey-724K/<kind>_x<N>.json``
* :func:`write_large_openimage_csv` ->
  ``mask_caption/openimage_v7/train-annotations-object-segmentation_x<N>.csv``
* :func:`write_large_sa1b` -> ``mask_caption/sa1b_x<N>/{js,img}/sa_<id>.{json,jpg}``
"""
from __future__ import annotations

import json
from pathlib import Path

from .mask_caption import OI_CSV, SA1B_DIR
from .visual_prompt import OSPREY_FILES, OSPREY_ROOT


def write_large_osprey(root, n_records: int,
                       kind: str = 'osprey_conversation') -> Path:
    """Stream ``n_records`` Osprey records (a JSON list) cycling over the
    sample file ``kind``; record ``i`` gets ``id = i`` where the file has
    ids. Returns the path written."""
    root = Path(root)
    src = root / OSPREY_ROOT / 'Osprey-724K' / OSPREY_FILES[kind]
    base = json.loads(src.read_text())
    dst = src.with_name(f'{kind}_x{n_records}.json')
    # split each encoded record after its leading '"id": ' value so that
    # a new id is a string concatenation (the files put "id" first)
    parts = []
    for r in base:
        text = json.dumps(r)
        head = '{"id": ' + json.dumps(r['id']) if 'id' in r else ''
        if head and text.startswith(head):
            parts.append(('{"id": ', text[len(head):]))
        else:
            parts.append(('', text))
    with open(dst, 'w') as f:
        f.write('[')
        for i in range(n_records):
            prefix, rest = parts[i % len(parts)]
            text = f'{prefix}{i}{rest}' if prefix else rest
            f.write(text if i == 0 else ', ' + text)
        f.write(']')
    return dst


def write_large_openimage_csv(root, n_rows: int) -> Path:
    """A segmentation CSV of ``n_rows`` rows cycling over the sample rows
    (same header; every row names an existing image and mask)."""
    root = Path(root)
    src = root / OI_CSV
    header, *rows = src.read_text().strip().split('\n')
    dst = src.with_name(f'{src.stem}_x{n_rows}.csv')
    with open(dst, 'w') as f:
        f.write(header + '\n')
        for i in range(n_rows):
            f.write(rows[i % len(rows)] + '\n')
    return dst


def write_large_sa1b(root, n_images: int) -> Path:
    """An SA-1B tree of ``n_images`` (``js/`` + ``img/``): image ``i`` copies
    the bytes and annotations of sample image ``i % k`` under the new id
    ``sa_<i + 1>``. Returns the tree's root."""
    root = Path(root)
    src = root / SA1B_DIR
    stems = sorted(p.stem for p in (src / 'js').iterdir())
    bases = [(json.loads((src / 'js' / f'{s}.json').read_text()),
              (src / 'img' / f'{s}.jpg').read_bytes()) for s in stems]
    dst = root / f'{SA1B_DIR}_x{n_images}'
    (dst / 'js').mkdir(parents=True, exist_ok=True)
    (dst / 'img').mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        ann, jpg = bases[i % len(bases)]
        image_id = i + 1
        rec = {'image': dict(ann['image'], image_id=image_id,
                             file_name=f'sa_{image_id}.jpg'),
               'annotations': ann['annotations']}
        (dst / 'js' / f'sa_{image_id}.json').write_text(json.dumps(rec))
        (dst / 'img' / f'sa_{image_id}.jpg').write_bytes(jpg)
    return dst
