"""The layout mapping against the released models' key manifests: the
training model of the Sa2VA-4B recipe (LoRA on, built weightless on the
meta device from the InternVL2.5 manifest's configs with the released
vocabulary, SAM2 hiera-L) has exactly one key for every released key, the
same shape, and maps back."""
from __future__ import annotations

import json

import pytest

from tests.conftest import REPO_ROOT, shared_path

from .helpers import check_released_manifest


def _manifest(name):
    return json.loads(shared_path('fixtures', 'sa2va_hf', 'manifests',
                                  f'{name}.json').read_text())


@pytest.mark.parametrize('name,base', [('Sa2VA-4B', 'InternVL2_5-4B')])
def test_every_released_key_maps_to_one_training_key_and_back(name, base, tiny_tokenizer_dir):
    internvl = json.loads(shared_path('fixtures', 'internvl', 'manifests',
                                      f'{base}.json').read_text())
    for train_embeddings in ('all', 'new_rows'):
        check_released_manifest(_manifest(name), internvl, REPO_ROOT / 'configs/sa2va_4b.py',
                                tiny_tokenizer_dir, train_embeddings=train_embeddings)
