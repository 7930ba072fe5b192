"""Time and peak memory of one Sa2VA training step.

``tiny`` (default): the model of ``configs/_base_/models/sa2va_tiny.py`` on
a batch with one sample of each family (image RES 2 objects, video RES 2
objects x 2 frames, visual prompt 2 regions, VQA with an image, text-only,
GCG 3 phrases, mask <-> caption describe and segment through option A; 9
tiles of 448 px, 5 SAM2 frames of 256 px), through ``model.train_step`` with an AdamW ``OptimWrapper`` (data
preprocessor, forward, ``parse_losses``, backward, step) -- what the mmengine
runner does per iteration.

``4b``: a Sa2VA-4B-sized model with random weights (InternViT-300M + the
Qwen2.5-3B LLM of InternVL2.5-4B with LoRA r128, SAM2 Hiera-L at 1024 px),
bf16 weights for the InternVL half, fp32 SAM2 under the real config's
trainable set; meant for a GPU (``--device cuda``). Reports samples/s and an
MFU estimate (model FLOPs: 2 x params x tokens forward, 4 x params x tokens
backward through the frozen LLM since activations still need gradients,
over the device's peak bf16 FLOP/s given with ``--peak-tflops``).

Usage::

    python benchmarks/train_step.py                         # tiny on CPU
    python benchmarks/train_step.py --steps 5 --threads 2
    python benchmarks/train_step.py --size 4b --device cuda --peak-tflops 989
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# InternVL2.5-4B: InternViT-300M-448px-V2_5 + Qwen2.5-3B (untied lm_head).
INTERNVL_4B = dict(
    vision_config=dict(
        num_channels=3, patch_size=14, image_size=448, qkv_bias=True, hidden_size=1024,
        num_attention_heads=16, intermediate_size=4096, qk_normalization=False,
        num_hidden_layers=24, use_flash_attn=False, hidden_act='gelu',
        norm_type='layer_norm', layer_norm_eps=1e-6, dropout=0.0, drop_path_rate=0.0,
        attention_dropout=0.0, initializer_range=0.02, initializer_factor=1.0),
    llm_config=dict(
        model_type='qwen2', architectures=['Qwen2ForCausalLM'], vocab_size=151674,
        hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
        num_attention_heads=16, num_key_value_heads=2, hidden_act='silu',
        max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0,
        tie_word_embeddings=False, use_sliding_window=False),
    select_layer=-1, force_image_size=448, downsample_ratio=0.5, template='internvl2_5',
    ps_version='v2', img_context_token_id=None)


def model_config(size: str, tokenizer_dir: str):
    """The ``model`` dict of the tiny base config, or its 4B-sized variant."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(REPO / 'configs/_base_/models/sa2va_tiny.py'))
    model = cfg.model
    model.tokenizer = tokenizer_dir
    if size == '4b':
        model.mllm.config = INTERNVL_4B
        model.mllm.torch_dtype = 'bfloat16'
        model.mllm.llm_lora = dict(r=128, lora_alpha=256, lora_dropout=0.05)
        model.mllm.gradient_checkpointing = True
        model.grounding_encoder.config = 'sam2_hiera_l'
        model.num_points = 12544
        model.data_preprocessor = dict(type='Sa2VADataPreprocessor', dtype='bfloat16',
                                       sam2_dtype='float32')
    return model, (1024 if size == '4b' else cfg.sa2va_tiny_sam2_size)


def make_batch(tokenizer, sam2_size: int) -> dict:
    """One collated sample of each family (the tests' synthetic batch)."""
    import tests.models.test_sa2va as t
    t.SAM2_SIZE = sam2_size
    return t.collate(t.family_samples(tokenizer).values())


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (MiB, Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step_flops(model, batch) -> float:
    """Model FLOPs of one step (see the module docstring)."""
    llm = sum(p.numel() for n, p in model.named_parameters()
              if n.startswith('mllm.language_model') and 'lora' not in n)
    vit = sum(p.numel() for p in model.mllm.vision_model.parameters())
    tokens = int(batch['attention_mask'].sum())
    tiles = int(batch['pixel_values'].shape[0])
    # forward 2 N T; backward 4 N T for the LLM (input gradients), ViT forward only
    return 6 * llm * tokens + 2 * vit * tiles * 1025


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', choices=['tiny', '4b'], default='tiny')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--steps', type=int, default=3, help='timed steps after 1 warm-up')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--peak-tflops', type=float, default=None,
                        help='device peak bf16 TFLOP/s for the MFU estimate')
    parser.add_argument('--json', action='store_true', help='print one JSON line')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from mmengine.optim import OptimWrapper
    from mmengine.registry import DefaultScope, MODELS
    from projects.sa2va.tokenization import build_tiny_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_tokenizer(tmp)
        cfg, sam2_size = model_config(args.size, tmp)
        torch.manual_seed(0)
        rss_before = peak_rss_mib()
        t0 = time.perf_counter()
        with DefaultScope.overwrite_default_scope('sa2va'):
            model = MODELS.build(cfg)
        build_s = time.perf_counter() - t0
    model = model.to(args.device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optim = OptimWrapper(torch.optim.AdamW(params, lr=4e-5, betas=(0.9, 0.999),
                                           weight_decay=0.05), clip_grad=dict(max_norm=1.0))
    batch = make_batch(model.tokenizer, sam2_size)
    cuda = args.device.startswith('cuda')

    def sync():
        if cuda:
            torch.cuda.synchronize()

    log = model.train_step(batch, optim)  # warm-up
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        sync()
        t0 = time.perf_counter()
        log = model.train_step(batch, optim)
        sync()
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    n_samples = batch['input_ids'].shape[0]
    result = dict(
        size=args.size, device=args.device, threads=torch.get_num_threads(),
        build_s=round(build_s, 2), step_s=round(step_s, 3),
        samples_per_s=round(n_samples / step_s, 3), batch=n_samples,
        tokens=int(batch['attention_mask'].sum()), tiles=int(batch['pixel_values'].shape[0]),
        sam2_frames=len(batch['g_pixel_values']),
        params_total_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        params_trainable_m=round(sum(p.numel() for p in params) / 1e6, 3),
        losses={k: round(float(v), 4) for k, v in log.items()})
    if cuda:
        result['peak_mem_gib'] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    else:
        result['peak_rss_mib'] = round(peak_rss_mib(), 1)
        result['rss_growth_from_build_mib'] = round(peak_rss_mib() - rss_before, 1)
    if args.peak_tflops:
        flops = step_flops(model, batch)
        result['tflops_per_step'] = round(flops / 1e12, 2)
        result['mfu'] = round(flops / step_s / (args.peak_tflops * 1e12), 4)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f'{k:>26}: {v}')
    return result


if __name__ == '__main__':
    os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
    main()
