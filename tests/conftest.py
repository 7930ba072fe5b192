"""Shared pytest fixtures: paths to shared/ and the tiny tokenizer."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get('SA2VA_SHARED_DIR', REPO_ROOT.parent / 'shared'))


def shared_path(*parts: str) -> Path:
    """A file under ``shared/`` (beside the repository); skip if absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f'shared fixture {path} is not available')
    return path


@pytest.fixture(scope='session')
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """Directory of the tiny Qwen2-style tokenizer (no Sa2VA tokens yet)."""
    from projects.sa2va.tokenization import build_tiny_tokenizer
    path = tmp_path_factory.mktemp('tiny_tokenizer')
    build_tiny_tokenizer(path)
    return path


@pytest.fixture()
def tiny_tokenizer(tiny_tokenizer_dir):
    """A fresh tiny tokenizer with Sa2VA's special tokens added."""
    from projects.sa2va.tokenization import add_special_tokens, load_tokenizer
    tok = load_tokenizer(tiny_tokenizer_dir)
    add_special_tokens(tok)
    return tok


@pytest.fixture(scope='session')
def sample_cwd(tmp_path_factory) -> Path:
    """A working directory holding ``data/sample/`` (every family, written by
    the sample-data generator) and ``data/sample/tokenizer``, as the tiny
    configs expect. Shared by the whole session: tests write their outputs
    into their own sub-folders of it."""
    from projects.sa2va.sample_data import make_sample_data
    from projects.sa2va.tokenization import build_tiny_tokenizer
    cwd = tmp_path_factory.mktemp('sample_cwd')
    make_sample_data(cwd / 'data' / 'sample')
    build_tiny_tokenizer(cwd / 'data' / 'sample' / 'tokenizer')
    return cwd
