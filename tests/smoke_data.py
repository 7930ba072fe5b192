"""Writes the small LLaVA-format data set the smoke config trains on."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_smoke_data(root, n_records: int = 12) -> Path:
    """``root/llava.json``, ``root/images/*.jpg``, ``root/tokenizer/``.

    Records alternate image questions (two sizes, so tiling varies) and
    text-only questions.
    """
    from projects.sa2va.tokenization import build_tiny_tokenizer
    root = Path(root)
    (root / 'images').mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    records = []
    colors = ['red', 'green', 'blue', 'white']
    for i in range(n_records):
        color = colors[i % 4]
        if i % 3 == 2:
            records.append(dict(id=f'text_{i}', conversations=[
                {'from': 'human', 'value': f'Name a {color} thing.'},
                {'from': 'gpt', 'value': f'A {color} ball.'}]))
            continue
        w, h = (60, 30) if i % 2 else (30, 30)
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / 'images' / f'{i:04d}.jpg')
        records.append(dict(id=str(i), image=f'{i:04d}.jpg', conversations=[
            {'from': 'human', 'value': '<image>\nWhat color is the box?'},
            {'from': 'gpt', 'value': f'The box is {color}.'},
            {'from': 'human', 'value': 'Is it large?'},
            {'from': 'gpt', 'value': 'No, it is small.'}]))
    (root / 'llava.json').write_text(json.dumps(records))
    build_tiny_tokenizer(root / 'tokenizer')
    return root
