"""benchmarks/data_path_vs_v1.py runs, and the project and the v1-style
anchor give identical model inputs on its files (not a timing test)."""
from __future__ import annotations

import pytest
import torch

from tests.benchmarks import load_benchmark, run_benchmark


def _load():
    return load_benchmark('data_path_vs_v1')


def test_benchmark_runs_and_tensors_are_identical(tmp_path):
    bench = _load()
    report = run_benchmark(bench, ['--root', str(tmp_path), '--images', '2',
                                   '--rounds', '1', '--dtype', 'float32', '--json',
                                   '--max-tiles', '2', '--sam2-size', '256'])
    assert report['setup']['identical'] is True
    for family in ('refcoco', 'osprey'):
        rows = report[family]
        assert set(rows) == {'project', 'anchor'}
        assert rows['project']['worker']['median'] > 0
        # uint8 tiles instead of float32 ones
        assert rows['project']['mb_per_sample'] < \
            0.75 * rows['anchor']['mb_per_sample']


def test_identity_check_catches_a_difference(tmp_path):
    bench = _load()
    records = bench.make_files(str(tmp_path), 2)
    picks = bench.refcoco_picks(2, records)
    anchor = bench.V1Style(max_tiles=2)
    v1 = anchor.model_input(anchor.collate(
        [anchor.osprey(records[i], picks[i]) for i in range(2)]), torch.float32)
    ours = dict(v1, prompt_masks=[m.bool() for m in v1['prompt_masks']],
                vp_overall_mask=v1['vp_overall_mask'].bool())
    bench.assert_identical(ours, v1, 'osprey')
    ours['prompt_masks'][1] = ~ours['prompt_masks'][1]
    with pytest.raises(AssertionError, match='prompt masks'):
        bench.assert_identical(ours, v1, 'osprey')


def test_fast_resampler_benchmark_reports_small_differences(tmp_path):
    report = run_benchmark(load_benchmark('fast_resampler'),
                           ['--root', str(tmp_path), '--images', '1', '--repeats', '1',
                            '--no-shrink', '--json'])
    rows = {k: v for k, v in report.items() if k != 'setup'}
    assert len(rows) == 3
    for row in rows.values():
        assert row['pil_ms'] > 0 and row['torch_ms'] > 0
        assert row['max_abs'] <= 3 and row['mean_abs'] < 0.05
