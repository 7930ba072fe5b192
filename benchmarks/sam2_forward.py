"""Time SAM2's image encoder and language-prompted mask decoder per image.

Models: the tiny golden-set model (S = 256; fixture weights when
``../shared/fixtures/sam2/tiny`` exists, else random) and presets at their
full size with random weights (default ``sam2.1_hiera_t``, S = 1024).

    .venv/bin/python benchmarks/sam2_forward.py [--device cpu] [--threads 2]
        [--batch 1] [--repeats 3] [--presets sam2.1_hiera_t] [--dtype fp32]

Prints one row per model: milliseconds per image for ``forward_image`` and
for ``forward_language_prompt`` (one [SEG] token per image), median over
``--repeats`` timed runs after one warm-up run.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from projects.sa2va.models import build_sam2  # noqa: E402

TINY = ROOT / '..' / 'shared' / 'fixtures' / 'sam2' / 'tiny'
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16}


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _median_ms(fn, repeats: int, device: torch.device) -> float:
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bench(name, model, batch, repeats, device, dtype):
    model = model.to(device).eval()
    size = model.image_size
    images = torch.randn(batch, 3, size, size, device=device)
    lang = torch.randn(batch, 1, model.hidden_dim, device=device)
    autocast = (torch.autocast(device.type, dtype=dtype)
                if dtype != torch.float32 else torch.autocast(device.type,
                                                               enabled=False))
    with torch.no_grad(), autocast:
        backbone = model.forward_image(images)
        enc = _median_ms(lambda: model.forward_image(images), repeats, device)
        dec = _median_ms(lambda: model.forward_language_prompt(backbone, lang),
                         repeats, device)
    params = sum(p.numel() for p in model.parameters())
    return {'model': name, 'image_size': size, 'params_M': round(params / 1e6, 2),
            'batch': batch, 'encoder_ms_per_image': round(enc / batch, 1),
            'decoder_ms_per_image': round(dec / batch, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--dtype', choices=sorted(DTYPES), default='fp32')
    parser.add_argument('--presets', nargs='*', default=['sam2.1_hiera_t'])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    rows = []
    tiny_cfg = TINY / 'config.json'
    if tiny_cfg.is_file():
        cfg = json.loads(tiny_cfg.read_text())['yaml_model_config_resolved']
        rows.append(bench('tiny (fixture weights)',
                          build_sam2(cfg, str(TINY / 'weights.safetensors')),
                          args.batch, args.repeats, device, DTYPES[args.dtype]))
    for preset in args.presets:
        rows.append(bench(f'{preset} (random weights)', build_sam2(preset),
                          args.batch, args.repeats, device, DTYPES[args.dtype]))
    print(f'device={device} threads={torch.get_num_threads()} '
          f'dtype={args.dtype} torch={torch.__version__}')
    keys = list(rows[0])
    print(' | '.join(keys))
    for row in rows:
        print(' | '.join(str(row[k]) for k in keys))


if __name__ == '__main__':
    main()
