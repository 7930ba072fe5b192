"""Throughput of the InternVL vision path (InternViT + pixel shuffle + mlp1) on CPU.

Measures ``InternVLChat.extract_feature`` (what the training forward runs per tile) for

* ``tiny``: the tiny test/demo tower (C 64, 2 layers, 448 px tiles),
* ``300m``: the InternViT-300M-448px-V2_5 tower + the 4B projector (4096 -> 2048), built with
  random weights at full size (the real shapes, no checkpoint needed),

at the requested batch sizes, with SDPA attention (the default) and the eager
softmax(QK^T)V path. Reports tiles/s, ViT tokens/s (1025 per 448 px tile) and LLM tokens/s
(256 per tile). Usage::

    python benchmarks/internvl_forward.py                      # tiny + 300m, batch 1 and 8
    python benchmarks/internvl_forward.py --towers tiny --batch-sizes 1 8 32 --repeats 5
    python benchmarks/internvl_forward.py --threads 2 --dtype bfloat16
"""
import argparse
import time

import torch
from torch import nn

from projects.sa2va.models.internvl import InternVisionConfig, InternVisionModel, build_mlp1
from projects.sa2va.models.internvl.projector import pixel_shuffle, vit_tokens_to_grid

TOWERS = {
    'tiny': (dict(hidden_size=64, num_attention_heads=4, intermediate_size=256,
                  num_hidden_layers=2), 64),
    '300m': (dict(hidden_size=1024, num_attention_heads=16, intermediate_size=4096,
                  num_hidden_layers=24), 2048),
}


class VisionPath(nn.Module):
    """ViT + pixel shuffle + mlp1: ``(N, 3, 448, 448) -> (N, 256, D)``."""

    def __init__(self, tower: str, attn_implementation: str):
        super().__init__()
        fields, llm_hidden = TOWERS[tower]
        config = InternVisionConfig(image_size=448, patch_size=14, qkv_bias=True,
                                    qk_normalization=False, norm_type='layer_norm',
                                    attn_implementation=attn_implementation, **fields)
        self.vision_model = InternVisionModel(config)
        self.mlp1 = build_mlp1(config.hidden_size, llm_hidden, 0.5)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        vit = self.vision_model(pixel_values).last_hidden_state[:, 1:]
        grid = pixel_shuffle(vit_tokens_to_grid(vit), 0.5)
        return self.mlp1(grid.flatten(1, 2))


def bench(tower: str, attn: str, batch: int, repeats: int, dtype: torch.dtype) -> dict:
    torch.manual_seed(0)
    model = VisionPath(tower, attn).to(dtype).eval()
    px = torch.randn(batch, 3, 448, 448, dtype=dtype)
    with torch.inference_mode():
        out = model(px)  # warm-up
        assert out.shape == (batch, 256, TOWERS[tower][1])
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(px)
            times.append(time.perf_counter() - start)
    best = min(times)
    return dict(tower=tower, attn=attn, batch=batch, seconds=best, tiles_s=batch / best,
                vit_tok_s=batch * 1025 / best, llm_tok_s=batch * 256 / best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--towers', nargs='+', default=['tiny', '300m'], choices=list(TOWERS))
    parser.add_argument('--batch-sizes', nargs='+', type=int, default=[1, 8])
    parser.add_argument('--attn', nargs='+', default=['sdpa', 'eager'],
                        choices=['sdpa', 'eager'])
    parser.add_argument('--repeats', type=int, default=3, help='timed runs; the best is kept')
    parser.add_argument('--threads', type=int, default=None, help='torch.set_num_threads')
    parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dtype}, CPU')
    print(f'{"tower":6} {"attn":6} {"batch":>5} {"s/iter":>8} {"tiles/s":>8} '
          f'{"ViT tok/s":>10} {"LLM tok/s":>10}')
    for tower in args.towers:
        for batch in args.batch_sizes:
            for attn in args.attn:
                r = bench(tower, attn, batch, args.repeats, dtype)
                print(f'{r["tower"]:6} {r["attn"]:6} {r["batch"]:5d} {r["seconds"]:8.3f} '
                      f'{r["tiles_s"]:8.2f} {r["vit_tok_s"]:10.0f} {r["llm_tok_s"]:10.0f}',
                      flush=True)


if __name__ == '__main__':
    main()
