"""The fast data path gives exactly the tensors of the straightforward rules
(issue 20): in-place normalisation, tiles written once as channels-last
bytes, nearest pooling by index sampling, duplicate objects decoded once;
and the opt-in torch resampler stays within a few grey levels of PIL."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image
from pycocotools import mask as mask_utils

from projects.sa2va.constants import IMAGENET_MEAN, IMAGENET_STD
from projects.sa2va.models import normalize_sam2_images
from projects.sa2va.transforms import (DecodeMasks, DynamicTiles,
                                       ImagesToTensor, SAM2Input,
                                       dynamic_tiles, normalize_uint8,
                                       option_a_prompt_masks,
                                       pool_prompt_masks, sam2_pixel_values,
                                       stack_uint8_images)
from projects.sa2va.transforms import masks as masks_module
from projects.sa2va.transforms.pixels import resize_image


def _old_normalize(images, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                   dtype=torch.float32):
    """The out-of-place implementation this replaces (three temporaries)."""
    x = images.to(torch.float32).div(255)
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return x.sub(m).div(s).to(dtype)


def _old_pool(masks, grid=16, mode='nearest', vision_size=448):
    x = (masks != 0).to(torch.float32)[None]
    if mode == 'nearest':
        return F.interpolate(x, size=(grid, grid), mode='nearest')[0] > 0
    resized = F.interpolate(x, size=(vision_size, vision_size),
                            mode='nearest')
    return F.adaptive_avg_pool2d(resized, (grid, grid))[0] > 0.5


def _photo(w=640, h=480, seed=0) -> Image.Image:
    """A JPEG with smooth structure and noise (like a photo, not white
    noise, which no resampler reproduces within a grey level)."""
    rng = np.random.default_rng(seed)
    x, y = np.linspace(0, 6, w), np.linspace(0, 4, h)
    wave = np.sin(3 * x)[None, :, None] * np.cos(2 * y)[:, None, None]
    base = 127 + 100 * wave * np.array([1.0, 0.7, 0.4])
    arr = (base + rng.normal(0, 20, (h, w, 3))).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, 'JPEG', quality=90)
    return Image.open(io.BytesIO(buf.getvalue())).convert('RGB')


def test_normalize_in_place_is_bit_identical():
    g = torch.Generator().manual_seed(0)
    u8 = torch.randint(0, 256, (5, 3, 40, 56), dtype=torch.uint8,
                       generator=g)
    channels_last = u8.contiguous(memory_format=torch.channels_last)
    ref = _old_normalize(u8)
    for x in (u8, channels_last, u8[0]):
        out = normalize_uint8(x)
        assert out.is_contiguous()
        assert torch.equal(out, ref if x.ndim == 4 else ref[0])
    for dtype in (torch.bfloat16, torch.float16):
        ref_cast = _old_normalize(u8, dtype=dtype)
        # one chunk, 2 tiles per chunk (a partial last one), leading dims
        for chunk in (1 << 22, 2 * 3 * 40 * 56, 1):
            out = normalize_uint8(channels_last, dtype=dtype, chunk=chunk)
            assert out.dtype == dtype and torch.equal(out, ref_cast)
        assert torch.equal(normalize_uint8(u8.view(5, 1, 3, 40, 56), dtype=dtype,
                                           chunk=2 * 3 * 40 * 56),
                           ref_cast.view(5, 1, 3, 40, 56))
        assert torch.equal(normalize_uint8(u8[0], dtype=dtype), ref_cast[0])
    # == torchvision ToTensor + Normalize on the same pixels
    tv = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    image = Image.fromarray(u8[0].permute(1, 2, 0).numpy())
    assert torch.equal(normalize_uint8(channels_last[0]), tv(image))
    assert torch.equal(normalize_sam2_images(channels_last), ref)
    assert normalize_sam2_images(u8, torch.bfloat16).dtype == torch.bfloat16


def test_tiles_are_channels_last_bytes_equal_to_chw():
    image = _photo(640, 480)
    tiles = dynamic_tiles(image)
    assert len(tiles) == 13
    pixel = stack_uint8_images(tiles)
    assert pixel.shape == (13, 3, 448, 448) and pixel.dtype == torch.uint8
    assert pixel.is_contiguous(memory_format=torch.channels_last)
    for k in (0, 5, 12):
        chw = torch.from_numpy(np.asarray(tiles[k]).transpose(2, 0, 1).copy())
        assert torch.equal(pixel[k], chw)
    pixel[0, 0, 0, 0] = 7  # writable memory (not a view of PIL's bytes)
    g = sam2_pixel_values(image)
    assert g.shape == (3, 1024, 1024)
    assert torch.equal(g, torch.from_numpy(
        np.asarray(image.resize((1024, 1024))).transpose(2, 0, 1).copy()))
    with pytest.raises(ValueError, match='image 1'):
        stack_uint8_images([tiles[0], image])


def test_nearest_index_sampling_matches_interpolate_on_many_sizes():
    rng = np.random.default_rng(20)
    mismatches = 0
    for trial in range(300):
        h, w = (int(v) for v in rng.integers(1, 700, 2))
        if trial % 10 == 0:  # around the grid / vision sizes
            h, w = (int(v) for v in rng.integers(1, 40, 2)) if trial % 20 \
                else (448 + int(rng.integers(-3, 4)), 16 * int(rng.integers(1, 9)))
        masks = torch.from_numpy(
            rng.random((1, h, w), dtype=np.float32) < rng.random())
        ours = pool_prompt_masks(masks)
        mismatches += int((ours != _old_pool(masks)).sum())
        if trial % 6 == 0:  # 'area' costs a full-size interpolate in the reference
            mismatches += int((pool_prompt_masks(masks, mode='area') !=
                               _old_pool(masks, mode='area')).sum())
    assert mismatches == 0
    masks = torch.from_numpy((rng.random((3, 100, 80)) < 0.3).astype(np.uint8))
    assert torch.equal(option_a_prompt_masks(masks.float()),
                       F.interpolate(masks[:, None].float(), size=(16, 16),
                                     mode='nearest')[:, 0].bool())


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask))
    return dict(size=rle['size'], counts=rle['counts'].decode())


def test_decode_masks_decodes_duplicates_once(monkeypatch):
    rng = np.random.default_rng(3)
    objs = [_rle((rng.random((30, 40)) < 0.4).astype(np.uint8))
            for _ in range(3)]
    poly = [[2.0, 2.0, 20.0, 3.0, 10.0, 25.0]]
    # sampled with replacement: repeats by identity and by equal value
    segs = [objs[1], poly, objs[1], dict(objs[1]), objs[0], [list(poly[0])]]
    calls = []
    real = masks_module.decode_object
    monkeypatch.setattr(masks_module, 'decode_object',
                        lambda *a: calls.append(1) or real(*a))
    out = DecodeMasks(combine='sum').transform(
        dict(segmentations=segs, ori_shape=(30, 40)))['masks']
    assert len(calls) == 3
    expected = np.stack([real(s, 30, 40, 'sum') for s in segs])
    assert out.dtype == torch.uint8 and torch.equal(out,
                                                    torch.from_numpy(expected))
    out[0, 0, 0] = 9  # copies, not views of one another
    assert out[2, 0, 0] != 9 or expected[2, 0, 0] == 9


def test_torch_resampler_within_a_few_grey_levels():
    image = _photo(640, 480)
    for size in [(1792, 1344), (448, 448), (1024, 1024), (300, 200)]:
        pil = np.asarray(image.resize(size)).astype(np.int16)
        fast = np.asarray(resize_image(image, size, 'torch')).astype(np.int16)
        diff = np.abs(pil - fast)
        assert diff.max() <= 3 and diff.mean() < 0.05, (size, diff.max())
    assert resize_image(image, (448, 448)) == image.resize((448, 448))
    with pytest.raises(ValueError, match='resampler'):
        resize_image(image, (448, 448), 'cv2')
    with pytest.raises(ValueError, match='resampler'):
        DynamicTiles(resampler='fast')


def test_resampler_switch_through_the_transforms():
    image = _photo(500, 375, seed=1)
    results = {}
    for resampler in ('pil', 'torch'):
        r = DynamicTiles(max_num=12, resampler=resampler).transform(
            dict(image=image))
        r = ImagesToTensor(resampler=resampler).transform(r)
        r = SAM2Input(resampler=resampler).transform(r)
        results[resampler] = r
    exact, fast = results['pil'], results['torch']
    assert torch.equal(exact['pixel_values'],
                       stack_uint8_images(dynamic_tiles(image)))
    for key in ('pixel_values', 'g_pixel_values'):
        assert exact[key].shape == fast[key].shape
        diff = (exact[key].int() - fast[key].int()).abs()
        assert 0 < diff.max() <= 3


def test_resampler_config_snippet_of_the_docs_builds(sample_cwd, monkeypatch):
    """docs/data_path.md's switch, appended to the tiny demo config: every
    resizing transform of every dataset of the mix takes it, and a sample
    of each kind builds."""
    from pathlib import Path

    from mmengine.config import Config

    from projects.sa2va.datasets.inspect import (build_dataset_from_config,
                                                 leaf_datasets)
    repo = Path(__file__).resolve().parents[2]
    doc = (repo / 'docs' / 'data_path.md').read_text()
    blocks = [b.split('```', 1)[0] for b in doc.split('```python\n')[1:]]
    snippet, = [b for b in blocks if "resampler='torch'" in b]
    cfg_file = sample_cwd / 'fast_resize_cfg.py'
    cfg_file.write_text(f"_base_ = [{str(repo / 'configs' / 'sa2va_tiny_demo.py')!r}]\n"
                        + snippet)
    monkeypatch.chdir(sample_cwd)
    cfg = Config.fromfile(str(cfg_file))
    datasets = leaf_datasets(build_dataset_from_config(cfg))
    seen = {}
    for ds in datasets:
        for t in ds.pipeline.transforms:
            if type(t).__name__ in ('DynamicTiles', 'ImagesToTensor', 'SAM2Input'):
                assert t.resampler == 'torch', (ds.dataset_name, type(t).__name__)
                seen.setdefault(type(t).__name__, ds)
    assert set(seen) == {'DynamicTiles', 'ImagesToTensor', 'SAM2Input'}
    sample = seen['SAM2Input'][0]
    assert sample['g_pixel_values'].dtype == torch.uint8
