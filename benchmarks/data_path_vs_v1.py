"""The project's data path against a Sa2VA v1-style one, same files, same
tensors.

    python benchmarks/data_path_vs_v1.py [--images 8] [--rounds 5]

Writes ``--images`` photo-like 640 x 480 JPEGs with 5-10 objects each
(polygons, some RLE) and times batches of ``--batch`` samples of two
families through both pipelines, one torch thread:

* ``refcoco`` (ground truth): 5 objects drawn with replacement, summed
  polygon parts, 12 tiles + thumbnail, the 1024 SAM2 input;
* ``osprey`` (visual prompt): every region, 'nearest' 16 x 16 prompt masks,
  12 tiles + thumbnail.

**Project**: the registered transforms of ``configs/_base_/datasets/
refseg.py`` / ``visual_prompt.py`` (text steps left out, ``PoolPromptMasks``
with ``ensure_nonempty=False`` for v1's exact grids), ``sa2va_collate_fn``,
then ``Sa2VADataPreprocessor`` for the model input (tiles in ``--dtype``,
bf16 as the 4B config; SAM2 frames float32).

**Anchor**, written from Sa2VA v1's dataset code (magic-research/Sa2VA,
``projects/llava_sam2/datasets``): per sample PIL ``dynamic_preprocess``
tiles, then per tile torchvision ``Resize(448, BICUBIC)`` + ``ToTensor`` +
``Normalize`` in the worker; RefCOCO opens the image twice (once to parse
the annotation, once for the pixels), decodes every drawn object (duplicates
too) part by part and adds the parts, makes the SAM2 input with
``DirectResize`` (``np.array`` -> ``to_pil_image`` -> PIL resize ->
``permute().contiguous()``); Osprey pools its uint8 masks with
``F.interpolate(nearest)``. Its collate stacks the float tiles; the model
then concatenates them and normalises each SAM2 image (``/255``, ``-=
mean``, ``/= std``).

Both get the same dummy text (64 ids per sample); the text is not timed.
"Worker" = per-sample pipelines + collate (what a DataLoader worker does);
"to model input" adds the trainer-side preparation on this CPU. Every batch
is checked to give identical tensors (``pixel_values``, normalised SAM2
frames, GT masks, prompt masks, ``vp_overall_mask``). The two pipelines
alternate batch by batch so that load on a shared machine hits both alike;
the report gives the median and range of ``--rounds`` rounds and of the
per-round ratios. ``--resampler torch`` adds the project with the opt-in
fast resampler (not identical: a few grey levels, reported).
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import statistics
import sys
import time

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

TEXT_IDS = list(range(1, 65))  # the same dummy text for both pipelines
REFCOCO_DRAWS = 5  # Sa2VA-4B's num_classes_per_sample


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------
def _photo(rng, w: int, h: int) -> np.ndarray:
    """Smooth shapes + noise: compresses and resizes like a photo."""
    x, y = np.linspace(0, 1, w)[None, :], np.linspace(0, 1, h)[:, None]
    img = np.zeros((h, w, 3))
    for c in range(3):
        fx, fy, ph = rng.uniform(2, 9, 3)
        img[..., c] = 127 + 90 * np.sin(fx * 6.28 * x + ph) * np.cos(fy * 6.28 * y)
    img += rng.normal(0, 12, img.shape)
    return img.clip(0, 255).astype(np.uint8)


def _polygon(rng, w: int, h: int) -> list[float]:
    cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
    rx, ry = rng.uniform(0.03, 0.3) * w, rng.uniform(0.03, 0.3) * h
    t = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(8, 24))))
    r = rng.uniform(0.7, 1.0, len(t))
    xs = np.clip(cx + rx * r * np.cos(t), 0, w - 1)
    ys = np.clip(cy + ry * r * np.sin(t), 0, h - 1)
    return [round(float(v), 2) for p in zip(xs, ys) for v in p]


def make_files(root: str, n_images: int, seed: int = 0,
               size: tuple[int, int] = (640, 480)) -> list[dict]:
    """Write the JPEGs and ``records.json``; return the records."""
    from PIL import Image
    from pycocotools import mask as mask_utils
    path = osp.join(root, 'records.json')
    if osp.exists(path):
        with open(path) as f:
            records = json.load(f)
        if len(records) >= n_images and records[0]['width'] == size[0]:
            return records[:n_images]
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    records = []
    for i in range(n_images):
        file = osp.join(root, f'img_{i:04d}.jpg')
        Image.fromarray(_photo(rng, w, h)).save(file, quality=90)
        objects = []
        for k in range(int(rng.integers(5, 11))):
            polys = [_polygon(rng, w, h) for _ in range(int(rng.integers(1, 3)))]
            seg = polys
            if k % 4 == 3:  # some objects as compressed RLE
                rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
                seg = dict(size=[h, w], counts=rle['counts'].decode())
            objects.append(dict(segmentation=seg))
        records.append(dict(img_path=file, width=w, height=h, objects=objects))
    with open(path, 'w') as f:
        json.dump(records, f)
    return records


def refcoco_picks(n_images: int, records, seed: int = 0) -> list[list[int]]:
    """The objects each RefCOCO sample draws (with replacement, as v1)."""
    rng = np.random.default_rng(seed + 1)
    return [rng.choice(len(r['objects']), REFCOCO_DRAWS, replace=True).tolist()
            for r in records[:n_images]]


# ---------------------------------------------------------------------------
# The project
# ---------------------------------------------------------------------------
TEXT_STEPS = ('SampleReferringObjects', 'EncodeConversation',
              'AddVisualPromptText', 'PackInputs')


def project_pipelines(resampler: str = 'pil', max_tiles: int = 12,
                      sam2_size: int = 1024) -> dict:
    """The families' config pipelines without their text steps."""
    from mmengine.config import Config
    from mmengine.dataset import Compose
    from mmengine.registry import DefaultScope

    import projects.sa2va.datasets  # noqa: F401  (registers the transforms)
    base = osp.join(REPO_ROOT, 'configs', '_base_', 'datasets')
    lists = dict(
        refcoco=Config.fromfile(osp.join(base, 'refseg.py')).refseg_pipeline,
        osprey=Config.fromfile(
            osp.join(base, 'visual_prompt.py')).vp_osprey_pipeline)
    out = {}
    with DefaultScope.overwrite_default_scope('sa2va'):
        for family, steps in lists.items():
            kept = []
            for step in steps:
                step = dict(step)
                if step['type'] in TEXT_STEPS:
                    continue
                if step['type'] == 'PoolPromptMasks':
                    step['ensure_nonempty'] = False  # v1's exact grids
                if step['type'] in ('DynamicTiles', 'ImagesToTensor',
                                    'SAM2Input'):
                    step['resampler'] = resampler
                if step['type'] == 'DynamicTiles':
                    step['max_num'] = max_tiles
                if step['type'] == 'SAM2Input':
                    step['size'] = sam2_size
                kept.append(step)
            kept.append(dict(type='PackInputs'))
            out[family] = Compose(kept)
    return out


def project_sample(pipeline, family: str, record: dict, picks) -> dict:
    from projects.sa2va.datasets.refseg import polygon_parts
    objects = record['objects']
    if family == 'refcoco':
        segs = [polygon_parts(objects[k]['segmentation']) for k in picks]
    else:
        segs = [o['segmentation'] for o in objects]
    return pipeline(dict(img_path=record['img_path'], segmentations=segs,
                         ori_shape=(record['height'], record['width']),
                         input_ids=list(TEXT_IDS), labels=list(TEXT_IDS)))


# ---------------------------------------------------------------------------
# The anchor: Sa2VA v1-style, written from its dataset code
# ---------------------------------------------------------------------------
class V1Style:
    """Sa2VA v1's per-sample image and mask work for RefCOCO and Osprey."""

    MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def __init__(self, max_tiles: int = 12, sam2_size: int = 1024):
        import torchvision.transforms as T
        self.max_tiles, self.sam2_size = max_tiles, sam2_size
        from torchvision.transforms.functional import InterpolationMode
        self.transformer = T.Compose([
            T.Lambda(lambda img: img.convert('RGB') if img.mode != 'RGB' else img),
            T.Resize((448, 448), interpolation=InterpolationMode.BICUBIC),
            T.ToTensor(), T.Normalize(mean=self.MEAN, std=self.STD)])

    @staticmethod
    def dynamic_preprocess(image, min_num=1, max_num=12, image_size=448,
                           use_thumbnail=True):
        from projects.sa2va.transforms.functional import find_closest_grid
        cols, rows = find_closest_grid(*image.size, min_num, max_num,
                                       image_size)  # v1's grid rule
        resized = image.resize((image_size * cols, image_size * rows))
        tiles = [resized.crop(((i % cols) * image_size, (i // cols) * image_size,
                               (i % cols + 1) * image_size,
                               (i // cols + 1) * image_size))
                 for i in range(cols * rows)]
        if use_thumbnail and len(tiles) != 1:
            tiles.append(image.resize((image_size, image_size)))
        return tiles

    def tiles(self, image) -> torch.Tensor:
        return torch.stack([self.transformer(t) for t in self.dynamic_preprocess(
            image, 1, self.max_tiles)])

    @staticmethod
    def direct_resize(image, target: int = 1024) -> torch.Tensor:
        from torchvision.transforms.functional import to_pil_image
        g = np.array(image)
        g = np.array(to_pil_image(g, mode='RGB').resize((target, target)))
        return torch.from_numpy(g).permute(2, 0, 1).contiguous()

    @staticmethod
    def ann_to_mask(seg, h: int, w: int) -> np.ndarray:
        from pycocotools import mask as mask_utils
        if isinstance(seg, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
        else:
            rle = seg  # compressed RLE as stored (str counts)
        return mask_utils.decode(rle)

    def refcoco(self, record: dict, picks) -> dict:
        from PIL import Image
        from pycocotools import mask as mask_utils
        image = Image.open(record['img_path']).convert('RGB')  # _parse_annotations
        width, height = image.size
        masks = []
        for idx in picks:
            seg = record['objects'][idx]['segmentation']
            binary = np.zeros((height, width), dtype=np.uint8)
            for part in (seg if isinstance(seg, list) else [seg]):
                if isinstance(part, dict):
                    m = self.ann_to_mask(part, height, width)
                else:
                    m = mask_utils.decode(mask_utils.frPyObjects([part], height, width))
                binary += m.astype(np.uint8).squeeze()
            masks.append(binary)
        masks = torch.stack([torch.from_numpy(m) for m in masks], dim=0)
        image = Image.open(record['img_path']).convert('RGB')  # prepare_data
        return dict(masks=masks, g_pixel_values=self.direct_resize(image, self.sam2_size),
                    pixel_values=self.tiles(image), input_ids=list(TEXT_IDS),
                    labels=list(TEXT_IDS))

    def osprey(self, record: dict, picks=None) -> dict:
        import torch.nn.functional as F
        from PIL import Image
        h, w = record['height'], record['width']
        masks = torch.from_numpy(np.stack(
            [self.ann_to_mask(o['segmentation'], h, w) for o in record['objects']]))
        masks = F.interpolate(masks.unsqueeze(0), size=(16, 16),
                              mode='nearest').squeeze(0)
        image = Image.open(record['img_path']).convert('RGB')
        pixel_values = self.tiles(image)
        vp = torch.Tensor([False] * (len(pixel_values) - 1) + [True])
        return dict(prompt_masks=masks, vp_overall_mask=vp,
                    pixel_values=pixel_values, input_ids=list(TEXT_IDS),
                    labels=list(TEXT_IDS))

    @staticmethod
    def collate(instances) -> dict:
        """The parts of v1's ``video_lisa_collate_fn`` these keys use."""
        from torch.nn.utils.rnn import pad_sequence
        ids = [torch.LongTensor(s['input_ids']) for s in instances]
        out = dict(input_ids=pad_sequence(ids, batch_first=True, padding_value=0),
                   labels=pad_sequence([torch.LongTensor(s['labels']) for s in instances],
                                       batch_first=True, padding_value=-100))
        pv = [s['pixel_values'] for s in instances]
        out['pixel_values'] = torch.stack(pv) if all(
            p.shape == pv[0].shape for p in pv) else pv
        for key in ('g_pixel_values', 'masks', 'prompt_masks'):
            if any(key in s for s in instances):
                out[key] = [s[key] for s in instances if key in s]
        if any('vp_overall_mask' in s for s in instances):
            out['vp_overall_mask'] = torch.cat([s['vp_overall_mask'] for s in instances])
        return out

    def model_input(self, batch: dict, dtype=torch.bfloat16) -> dict:
        """What v1's model does before the vision towers (tiles cast to the
        vision tower's dtype, SAM2 frames normalised in float32)."""
        out = dict(batch)
        out['pixel_values'] = torch.cat([p.to(dtype) for p in batch['pixel_values']])
        if 'g_pixel_values' in batch:
            out['g_pixel_values'] = torch.stack([self.sam2_preprocess(g)
                                                 for g in batch['g_pixel_values']])
        return out

    def sam2_preprocess(self, image: torch.Tensor) -> torch.Tensor:
        image = image / 255.
        image -= torch.tensor(self.MEAN, dtype=image.dtype)[:, None, None]
        image /= torch.tensor(self.STD, dtype=image.dtype)[:, None, None]
        return image


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------
def batch_bytes(batch: dict) -> int:
    total = 0
    for v in batch.values():
        for t in (v if isinstance(v, list) else [v]):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total


def assert_identical(ours: dict, v1: dict, family: str) -> None:
    def same(a, b, what):
        if a.shape != b.shape or not torch.equal(a, b):
            raise AssertionError(f'{family}: {what} differ')
    same(ours['pixel_values'], v1['pixel_values'], 'pixel_values')
    if family == 'refcoco':
        same(ours['g_pixel_values'], v1['g_pixel_values'], 'SAM2 input')
        for a, b in zip(ours['masks'], v1['masks'], strict=True):
            same(a, b, 'GT masks')
    else:
        for a, b in zip(ours['prompt_masks'], v1['prompt_masks'], strict=True):
            same(a, b.bool(), 'prompt masks')
        same(ours['vp_overall_mask'], v1['vp_overall_mask'].bool(), 'vp_overall_mask')


def run_round(family, batches, records, picks, anchor, pipelines, pre,
              check: bool) -> dict:
    """One pass over the batches, pipelines alternating; seconds per side."""
    from projects.sa2va.datasets.collate import sa2va_collate_fn
    times = {name: [0.0, 0.0] for name in pipelines}
    times['anchor'] = [0.0, 0.0]
    nbytes = {}
    max_diff = 0.0
    for b, idx in enumerate(batches):
        order = ['anchor', *pipelines] if b % 2 == 0 else [*pipelines, 'anchor']
        results = {}
        for name in order:
            t0 = time.perf_counter()
            if name == 'anchor':
                collated = anchor.collate([getattr(anchor, family)(records[i], picks[i])
                                           for i in idx])
                t1 = time.perf_counter()
                model_in = anchor.model_input(collated, pre.dtype)
            else:
                collated = sa2va_collate_fn([project_sample(
                    pipelines[name], family, records[i], picks[i]) for i in idx])
                t1 = time.perf_counter()
                model_in = pre(collated)
            t2 = time.perf_counter()
            times[name][0] += t1 - t0
            times[name][1] += t2 - t0
            nbytes[name] = batch_bytes(collated)
            results[name] = model_in
        if check:
            assert_identical(results['project'], results['anchor'], family)
        if 'project, torch resampler' in results:
            fast = results['project, torch resampler']['pixel_values'].float()
            diff = (fast - results['project']['pixel_values'].float()).abs()
            max_diff = max(max_diff, float(diff.max()) * 255 * 0.229)  # ~ grey levels
    return dict(times=times, bytes=nbytes, max_diff=max_diff)


def summarise(rounds: list[dict], n_samples: int, batch: int) -> dict:
    names = list(rounds[0]['times'])
    out = {}
    for name in names:
        row = {}
        for j, stage in enumerate(('worker', 'model_input')):
            rates = [n_samples / r['times'][name][j] for r in rounds]
            row[stage] = dict(median=statistics.median(rates), min=min(rates),
                              max=max(rates))
            if name != 'anchor':
                ratios = [r['times']['anchor'][j] / r['times'][name][j]
                          for r in rounds]
                row[stage + '_ratio'] = dict(median=statistics.median(ratios),
                                             min=min(ratios), max=max(ratios))
        row['mb_per_sample'] = rounds[0]['bytes'][name] / batch / 2**20
        out[name] = row
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--root', default='work_dirs/bench_v1')
    parser.add_argument('--images', type=int, default=8)
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--families', nargs='+', default=['refcoco', 'osprey'],
                        choices=['refcoco', 'osprey'])
    parser.add_argument('--resampler', choices=['pil', 'torch'], default='pil',
                        help="'torch' adds the project with the fast resampler")
    parser.add_argument('--max-tiles', type=int, default=12,
                        help='12 tiles + thumbnail = 13 for 640 x 480')
    parser.add_argument('--sam2-size', type=int, default=1024)
    parser.add_argument('--dtype', choices=['bfloat16', 'float32'], default='bfloat16',
                        help="the tiles' dtype at the model input (the 4B config: bf16)")
    parser.add_argument('--no-check', action='store_true',
                        help='skip the identical-tensor check')
    parser.add_argument('--json', action='store_true')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from projects.sa2va.models import Sa2VADataPreprocessor

    records = make_files(osp.abspath(args.root), args.images)
    picks = refcoco_picks(args.images, records)
    anchor = V1Style(args.max_tiles, args.sam2_size)
    sizes = (args.max_tiles, args.sam2_size)
    pipes = {'project': project_pipelines('pil', *sizes)}
    if args.resampler == 'torch':
        pipes['project, torch resampler'] = project_pipelines('torch', *sizes)
    pre = Sa2VADataPreprocessor(dtype=args.dtype, sam2_dtype='float32')
    batches = [list(range(i, i + args.batch))
               for i in range(0, args.images - args.batch + 1, args.batch)]
    n_samples = len(batches) * args.batch
    report = {}
    for family in args.families:
        pipelines = {name: p[family] for name, p in pipes.items()}
        run_round(family, batches[:1], records, picks, anchor, pipelines, pre,
                  False)  # warm-up
        rounds = [run_round(family, batches, records, picks, anchor, pipelines,
                            pre, not args.no_check) for _ in range(args.rounds)]
        report[family] = summarise(rounds, n_samples, args.batch)
        if args.resampler == 'torch':
            report[family]['torch_resampler_max_diff_grey'] = round(
                max(r['max_diff'] for r in rounds), 2)
    report['setup'] = dict(images=args.images, batch=args.batch, rounds=args.rounds,
                           samples_per_round=n_samples, threads=torch.get_num_threads(),
                           dtype=args.dtype, max_tiles=args.max_tiles,
                           sam2_size=args.sam2_size,
                           torch=torch.__version__, identical=not args.no_check)
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report)
    return report


def print_table(report: dict) -> None:
    def cell(d):
        return f"{d['median']:.2f} ({d['min']:.2f}-{d['max']:.2f})"
    print('| family | pipeline | worker samples/s | to model input samples/s | '
          'ratio worker | ratio to model input | MB/sample shipped |')
    print('|---|---|---|---|---|---|---|')
    for family, rows in report.items():
        if family == 'setup':
            continue
        for name, row in rows.items():
            if not isinstance(row, dict):
                continue
            ratios = ('-', '-') if name == 'anchor' else (
                cell(row['worker_ratio']) + 'x', cell(row['model_input_ratio']) + 'x')
            print(f"| {family} | {name} | {cell(row['worker'])} | "
                  f"{cell(row['model_input'])} | {ratios[0]} | {ratios[1]} | "
                  f"{row['mb_per_sample']:.1f} |")
    print(json.dumps(report['setup']))


if __name__ == '__main__':
    main()
