"""Family 5, VQA: LLaVA-Instruct (images and text-only records)."""
from __future__ import annotations

import json
import os.path as osp

from PIL import Image

from ..constants import IMAGE_PLACEHOLDER
from ..registry import DATASETS
from ..transforms.text import conversation_from_turns
from .base import Sa2VABaseDataset, estimate_text_tokens, estimate_tiles


def image_size_from_header(path: str) -> tuple[int, int] | None:
    """``(width, height)`` read from the file header (no pixel decoding);
    None if the file is missing or unreadable."""
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, SyntaxError):
        return None


@DATASETS.register_module()
class LLaVADataset(Sa2VABaseDataset):
    """LLaVA-Instruct conversations (``llava_v1_5_mix665k.json``).

    On disk: one JSON list of ``{'id', 'image'?, 'conversations'}``;
    ``image`` is relative to ``data_prefix['img_path']``; records without
    ``image`` are text-only (kept; the collate function gives them a dummy
    tile with ``image_flags`` 0, as Sa2VA's zero ``pixel_values``).

    Each record becomes ``conversation`` (pairs), ``img_path`` (or none)
    and its length estimate. The ``<image>`` placeholder is moved to the
    front of the first question as ``<image>\\n`` (Sa2VA's convention).

    Args:
        max_num_tiles: tiling limit used for the length estimate (match the
            pipeline's ``DynamicTiles``).
        read_image_headers: read each image's header for the tile estimate
            when building the index (one small read per image); ``False``
            assumes one full set of tiles (``max_num_tiles + 1``).
        **kwargs: see :class:`Sa2VABaseDataset`.
    """

    def __init__(self, *args, max_num_tiles: int = 12,
                 read_image_headers: bool = True, **kwargs):
        self.max_num_tiles = max_num_tiles
        self.read_image_headers = read_image_headers
        kwargs.setdefault('data_prefix', dict(img_path=''))
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> list[dict]:
        with open(self.ann_file, encoding='utf-8') as f:
            records = json.load(f)
        if not isinstance(records, list):
            raise ValueError(f'{self.ann_file}: expected a JSON list of '
                             f'records, got {type(records).__name__}')
        out = []
        for i, rec in enumerate(records):
            try:
                conv = conversation_from_turns(rec['conversations'])
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f'{self.ann_file}: record {i} (id '
                                 f'{rec.get("id")!r}): bad conversations: '
                                 f'{exc}') from None
            if not conv:
                raise ValueError(f'{self.ann_file}: record {i} (id '
                                 f'{rec.get("id")!r}) has no question/answer '
                                 f'pair')
            info = dict(record_id=str(rec.get('id', i)))
            text = ''.join(t['input'] + t['output'] for t in conv)
            if rec.get('image'):
                first = conv[0]['input'].replace(IMAGE_PLACEHOLDER, '')
                conv[0]['input'] = IMAGE_PLACEHOLDER + '\n' + first.strip('\n')
                path = osp.join(self.data_prefix['img_path'], rec['image'])
                info['img_path'] = path
                size = image_size_from_header(path) \
                    if self.read_image_headers else None
                info['num_tiles_estimate'] = (
                    estimate_tiles(*size, max_num=self.max_num_tiles)
                    if size else self.max_num_tiles + 1)
            else:
                for turn in conv:
                    turn['input'] = turn['input'].replace(IMAGE_PLACEHOLDER,
                                                          '')
                info['num_tiles_estimate'] = 0
            info['conversation'] = conv
            info['text_tokens_estimate'] = estimate_text_tokens(text)
            out.append(info)
        return out

    def modality_length_of(self, info: dict) -> int:
        text = info['text_tokens_estimate']
        tiles = info['num_tiles_estimate']
        return text + 256 * tiles if tiles else -text
