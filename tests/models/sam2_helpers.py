"""Shared helpers of the SAM2 tests: fixture paths and the tiny model."""
import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parents[2] / '..' / 'shared' / 'fixtures' / 'sam2'
TINY = FIXTURES / 'tiny'
MANIFESTS = FIXTURES / 'manifests'


def require_fixtures() -> None:
    """Skip the calling test when the shared fixture folder is absent."""
    if not TINY.is_dir():
        pytest.skip(f'SAM2 fixtures not found at {FIXTURES.resolve()} '
                    '(the shared/ folder beside the repository)')


def tiny_config() -> dict:
    """The tiny model's resolved yaml ``model:`` section."""
    return json.loads((TINY / 'config.json').read_text())[
        'yaml_model_config_resolved']


def strip_targets(cfg):
    """Drop every ``_target_`` key of a nested dict."""
    if isinstance(cfg, dict):
        return {k: strip_targets(v) for k, v in cfg.items() if k != '_target_'}
    return cfg
