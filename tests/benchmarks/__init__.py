"""Tests that the scripts under benchmarks/ run (not timings)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def load_benchmark(name: str):
    """Import ``benchmarks/<name>.py`` (not a package) as a module."""
    spec = importlib.util.spec_from_file_location(
        f'bench_{name}', REPO / 'benchmarks' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_benchmark(module, argv: list):
    """``module.main(argv)``, restoring torch's thread count it changes."""
    threads = torch.get_num_threads()
    try:
        return module.main(argv)
    finally:
        torch.set_num_threads(threads)
