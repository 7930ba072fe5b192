"""benchmarks/gpu_train_step.py runs unchanged on the CPU with the tiny
model (the GPU run uses the same code with ``--size 4b --device cuda``)."""
from __future__ import annotations

import math

from tests.benchmarks import load_benchmark, run_benchmark


def _load():
    return load_benchmark('gpu_train_step')


def test_tiny_cpu_step_split_flops_and_loader(sample_cwd):
    bench = _load()
    results = run_benchmark(bench, [
        '--size', 'tiny', '--device', 'cpu', '--steps', '1', '--tiles', '1',
        '--frames', '2', '--variants', 'nockpt-eager', '--json',
        '--loader-workers', '0', '--loader-batch', '2', '--loader-batches', '1',
        '--loader-root', str(sample_cwd / 'data' / 'sample')])
    step, loader = results
    assert 'error' not in step, step.get('error')
    assert (step['grad_ckpt'], step['attn']) == (False, 'eager')
    # SAM2 frames: image RES, video (2 frames), GCG, option-A segment
    assert step['batch'] == 8 and step['sam2_frames'] == 1 + 2 + 1 + 1
    # 4 image samples x 1 tile, 2 frames, the text-only dummy tile, 2 option-A tiles
    assert step['tiles'] == 4 + 2 + 1 + 2
    split = step['split_s']
    for part in ('vit', 'llm', 'sam2', 'optimizer'):
        assert split[part] > 0, part
    parts = sum(v for k, v in split.items() if k != 'step')
    assert parts <= split['step'] * 1.05
    assert all(math.isfinite(v) for v in step['losses'].values())
    terms = step['flop_terms_tflops']
    assert set(terms) == {'vit', 'llm', 'llm_trainable', 'sam2_encoder'}
    assert step['model_tflops_per_step'] > 0
    assert loader['variant'] == 'dataloader' and loader['samples_per_s'] > 0


def test_child_arguments_drop_variant_loader_and_output_flags():
    bench = _load()
    argv = ['--size', 'tiny', '--variants', 'ckpt-sdpa', 'nockpt-eager', '--steps', '2',
            '--loader-workers', '2', '--loader-small', '--json', '--device', 'cpu']
    assert bench._child_argv(argv) == ['--size', 'tiny', '--steps', '2', '--device', 'cpu']


def test_4b_model_dict_is_the_config_at_real_sizes(tiny_tokenizer_dir):
    bench = _load()
    cfg, sam2_size = bench.model_config('4b', str(tiny_tokenizer_dir), False, 'eager')
    assert sam2_size == 1024 and 'model_path' not in cfg.mllm
    llm = cfg.mllm.config['llm_config']
    assert (llm['hidden_size'], llm['num_hidden_layers'], llm['vocab_size']) == \
        (2048, 36, 151674)
    assert cfg.mllm.config['vision_config']['num_hidden_layers'] == 24
    assert cfg.mllm.torch_dtype == 'bfloat16' and cfg.mllm.llm_lora['r'] == 128
    assert (cfg.mllm.gradient_checkpointing, cfg.mllm.attn_implementation) == (False, 'eager')
    assert cfg.grounding_encoder.config == 'sam2_hiera_l'
    assert cfg.grounding_encoder.checkpoint is None
    assert cfg.data_preprocessor.dtype == 'bfloat16'
