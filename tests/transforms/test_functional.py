"""Exact-value tests of the seed's rules against straightforward references
(torchvision ``T.Compose``, ``F.interpolate``, ``adaptive_avg_pool2d``, PIL,
pycocotools)."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image
from pycocotools import mask as mask_utils
from torchvision.transforms import InterpolationMode

from projects.sa2va.transforms import (decode_mask, derive_mask_caption_batch,
                                       dynamic_tiles, find_closest_grid,
                                       image_to_uint8_tensor,
                                       mask_caption_item, normalize_uint8,
                                       pixel_values_from_image,
                                       pool_prompt_masks,
                                       region_token_counts,
                                       rle_counts_from_string,
                                       sam2_pixel_values, visual_prompt_text)
from tests.conftest import shared_path

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _random_image(w, h, mode='RGB', seed=0):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img = Image.fromarray(arr, 'RGB')
    if mode == 'RGB':
        return img
    if mode == 'JPEG':
        buf = io.BytesIO()
        img.save(buf, format='JPEG', quality=80)
        buf.seek(0)
        return Image.open(buf)
    if mode == 'P':
        return img.convert('P', palette=Image.ADAPTIVE, colors=64)
    if mode == 'RGBA':
        rgba = img.convert('RGBA')
        alpha = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8))
        rgba.putalpha(alpha)
        return rgba
    return img.convert(mode)


IMAGE_CASES = [(37, 53, 'RGB'), (640, 480, 'JPEG'), (448, 448, 'RGB'),
               (301, 99, 'L'), (120, 200, 'RGBA'), (77, 65, 'P'),
               (1000, 3, 'RGB')]


@pytest.mark.parametrize('w,h,mode', IMAGE_CASES)
def test_pixel_values_match_torchvision_compose(w, h, mode):
    img = _random_image(w, h, mode)
    ref = T.Compose([
        T.Lambda(lambda im: im.convert('RGB')),
        T.Resize((448, 448), interpolation=InterpolationMode.BICUBIC),
        T.ToTensor(),
        T.Normalize(MEAN, STD),
    ])(img)
    out = pixel_values_from_image(img)
    assert out.shape == (3, 448, 448) and out.dtype == torch.float32
    assert torch.equal(out, ref)
    # The uint8 path normalised later (on device) is bit-identical.
    u8 = image_to_uint8_tensor(img)
    assert u8.dtype == torch.uint8 and u8.shape == (3, 448, 448)
    assert torch.equal(normalize_uint8(u8[None])[0], ref)


def test_normalize_uint8_rejects_float():
    with pytest.raises(TypeError, match='uint8'):
        normalize_uint8(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match='3, H, W'):
        normalize_uint8(torch.zeros(4, 4, 4, dtype=torch.uint8))


@pytest.mark.parametrize('size,max_num,grid,n_tiles', [
    ((800, 600), 12, (4, 3), 13), ((800, 600), 6, (3, 2), 7),
    ((1920, 1080), 12, (4, 2), 9), ((1920, 1080), 6, (2, 1), 3),
    ((600, 800), 12, (3, 4), 13), ((600, 800), 6, (2, 3), 7),
    ((1080, 1920), 12, (2, 4), 9), ((1080, 1920), 6, (1, 2), 3),
    ((448, 448), 12, (1, 1), 1), ((448, 448), 6, (1, 1), 1),
    ((2000, 300), 12, (7, 1), 8), ((2000, 300), 6, (6, 1), 7),
])
def test_dynamic_tiling_worked_examples(size, max_num, grid, n_tiles):
    """The worked examples of the InternVL fixture README, section 3."""
    assert find_closest_grid(*size, max_num=max_num) == grid
    img = _random_image(*size, seed=1)
    tiles = dynamic_tiles(img, max_num=max_num)
    assert len(tiles) == n_tiles
    assert all(t.size == (448, 448) and t.mode == 'RGB' for t in tiles)
    cols, rows = grid
    resized = img.resize((448 * cols, 448 * rows))
    for k in range(cols * rows):
        x, y = (k % cols) * 448, (k // cols) * 448
        crop = resized.crop((x, y, x + 448, y + 448))
        assert np.array_equal(np.asarray(tiles[k]), np.asarray(crop))
    if n_tiles > 1:
        assert np.array_equal(np.asarray(tiles[-1]),
                              np.asarray(img.resize((448, 448))))


def test_dynamic_tiling_tie_rule_small_image():
    # 896x448 has aspect 2: (2,1) and (4,2) tie; area 401,408 is not more
    # than half of 448^2 * 8 = 802,816, so the smaller grid stays.
    assert find_closest_grid(896, 448) == (2, 1)
    # 2000x1000: area 2,000,000 > 802,816 -> (4, 2).
    assert find_closest_grid(2000, 1000) == (4, 2)
    assert find_closest_grid(2000, 1000, max_num=7) == (2, 1)
    assert len(dynamic_tiles(_random_image(50, 50), use_thumbnail=True)) == 1
    assert len(dynamic_tiles(_random_image(900, 450),
                             use_thumbnail=False)) == 2


@pytest.mark.parametrize('w,h,mode', IMAGE_CASES)
def test_sam2_pixel_values_direct_resize(w, h, mode):
    img = _random_image(w, h, mode, seed=2)
    out = sam2_pixel_values(img)
    ref = np.asarray(img.convert('RGB').resize((1024, 1024)))
    assert out.dtype == torch.uint8 and out.shape == (3, 1024, 1024)
    assert np.array_equal(out.permute(1, 2, 0).numpy(), ref)
    assert sam2_pixel_values(img, size=64).shape == (3, 64, 64)


# ---------------------------------------------------------------------------
# decode_mask
# ---------------------------------------------------------------------------
def _box(h, w, r0, r1, c0, c1):
    m = np.zeros((h, w), np.uint8)
    m[r0:r1 + 1, c0:c1 + 1] = 1
    return m


# The worked values of dataset-formats.md 0.2 (H=6, W=8).
WORKED = [
    (None, [48], '`1'),
    ((1, 3, 2, 4), [13, 3, 3, 3, 3, 3, 20], '=33000a0'),
    ((2, 5, 0, 2), [2, 4, 2, 4, 2, 4, 30], '242000l0'),
    ((0, 1, 5, 7), [30, 2, 4, 2, 4, 2, 4], 'n0240000'),
    ((3, 4, 4, 6), [27, 2, 4, 2, 4, 2, 7], 'k0240003'),
]


@pytest.mark.parametrize('box,counts,string', WORKED)
def test_decode_mask_worked_values(box, counts, string):
    expect = np.zeros((6, 8), np.uint8) if box is None else _box(6, 8, *box)
    for seg in ({'size': [6, 8], 'counts': counts},
                {'size': [6, 8], 'counts': string},
                {'size': [6, 8], 'counts': string.encode()}):
        out = decode_mask(seg, 6, 8)
        assert out.dtype == np.uint8 and out.shape == (6, 8)
        assert np.array_equal(out, expect)
    assert rle_counts_from_string(string).tolist() == counts


def test_rle_string_parser_matches_pycocotools_on_random_masks():
    rng = np.random.default_rng(3)
    for trial in range(40):
        h, w = rng.integers(1, 90, 2)
        density = rng.uniform(0, 1)
        m = (rng.uniform(size=(h, w)) < density).astype(np.uint8)
        if trial % 5 == 0:  # large smooth blob: long runs, big deltas
            m = np.zeros((h, w), np.uint8)
            m[h // 4:, : w // 2] = 1
        rle = mask_utils.encode(np.asfortranarray(m))
        counts = rle_counts_from_string(rle['counts'])
        assert counts.sum() == h * w
        vals = np.arange(len(counts)) % 2
        flat = np.repeat(vals, counts).astype(np.uint8)
        assert np.array_equal(flat.reshape(w, h).T, m)
        assert np.array_equal(decode_mask(rle, h, w), m)


def test_decode_mask_real_sav_rles():
    path = shared_path('data', 'real', 'sa-v', 'sav_000001_manual.json')
    ann = json.loads(path.read_text())
    h, w = int(ann['video_height']), int(ann['video_width'])
    checked = 0
    for frame in ann['masklet'][:30]:
        for rle in frame:
            out = decode_mask(rle, h, w)
            assert np.array_equal(out, mask_utils.decode(
                {'size': rle['size'], 'counts': rle['counts'].encode()}))
            checked += 1
    assert checked >= 30


def test_decode_polygons_union_and_reference():
    h, w = 40, 50
    p1 = [5.0, 5.0, 30.0, 5.0, 30.0, 25.0, 5.0, 25.0]
    p2 = [20.0, 15.0, 45.0, 15.0, 45.0, 35.0, 20.0, 35.0]
    out = decode_mask([p1, p2], h, w)
    ref = mask_utils.decode(mask_utils.frPyObjects([p1, p2], h, w))
    assert out.dtype == np.uint8 and out.max() == 1
    assert np.array_equal(out, np.maximum(ref[..., 0], ref[..., 1]))
    single = decode_mask([p1], h, w)
    assert np.array_equal(single, ref[..., 0])
    # a triangle: the minimum polygon
    assert decode_mask([[1, 1, 10, 1, 1, 10]], h, w).sum() > 0


@pytest.mark.parametrize('seg,h,w,exc,msg', [
    ({'size': [6, 9], 'counts': [48]}, 6, 8, ValueError, 'differs'),
    ({'size': [6, 8], 'counts': [40]}, 6, 8, ValueError, 'sum to 40'),
    ({'size': [6, 8], 'counts': [-1, 49]}, 6, 8, ValueError, 'negative'),
    ({'size': [6, 8], 'counts': '=33000'}, 6, 8, ValueError, 'decode to 28'),
    ({'size': [6, 8], 'counts': '=33\x7f'}, 6, 8, ValueError, 'character'),
    ({'size': [6, 8], 'counts': 'n'}, 6, 8, ValueError, 'truncated'),
    ({'size': [6, 8], 'counts': ''}, 6, 8, ValueError, 'empty'),
    ({'size': [6, 8], 'counts': 3.5}, 6, 8, TypeError, 'counts'),
    ({'counts': '`1'}, 6, 8, ValueError, 'size'),
    ([[1.0, 2.0, 3.0, 4.0]], 6, 8, ValueError, 'degenerate'),
    ([[1.0, 2.0, 3.0, 4.0, 5.0]], 6, 8, ValueError, 'odd'),
    ([], 6, 8, ValueError, 'empty'),
    ('polygon', 6, 8, TypeError, 'unknown segmentation type'),
    (None, 6, 8, TypeError, 'unknown segmentation type'),
])
def test_decode_mask_bad_input(seg, h, w, exc, msg):
    with pytest.raises(exc, match=msg):
        decode_mask(seg, h, w)


# ---------------------------------------------------------------------------
# prompt masks
# ---------------------------------------------------------------------------
def _random_masks(n, h, w, seed):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, h, w), np.uint8)
    for i in range(n):
        r0, c0 = rng.integers(0, h), rng.integers(0, w)
        r1, c1 = rng.integers(r0, h) + 1, rng.integers(c0, w) + 1
        masks[i, r0:r1, c0:c1] = 1
    return masks


@pytest.mark.parametrize('h,w', [(480, 640), (37, 53), (16, 16), (1000, 7),
                                 (448, 448)])
def test_pool_nearest_is_osprey_rule(h, w):
    masks = torch.from_numpy(_random_masks(6, h, w, seed=h + w))
    ref = F.interpolate(masks[None].float(), size=(16, 16),
                        mode='nearest')[0].bool()
    out = pool_prompt_masks(masks, mode='nearest')
    assert out.dtype == torch.bool and out.shape == (6, 16, 16)
    assert torch.equal(out, ref)
    # uint8 input to interpolate (as Osprey) gives the same cells
    ref_u8 = F.interpolate(masks[None], size=(16, 16), mode='nearest')[0]
    assert torch.equal(out, ref_u8.bool())


@pytest.mark.parametrize('h,w', [(480, 640), (37, 53), (1365, 2048),
                                 (448, 448), (20, 900)])
def test_pool_area_is_describe_anything_rule(h, w):
    masks = torch.from_numpy(_random_masks(5, h, w, seed=h * 3 + w))
    resize = T.Resize((448, 448), interpolation=InterpolationMode.NEAREST)
    ref = torch.stack([
        (F.adaptive_avg_pool2d(resize(m[None].float()), (16, 16)) > 0.5)
        .to(torch.uint8)[0] for m in masks
    ])
    out = pool_prompt_masks(masks.numpy(), mode='area')
    assert out.dtype == torch.bool
    assert torch.equal(out, ref.bool())


def test_ensure_nonempty_gives_vanished_region_its_cell():
    h, w = 480, 640
    masks = np.zeros((3, h, w), np.uint8)
    masks[0, 100:300, 100:400] = 1          # big: unchanged
    masks[1, 451:454, 601:603] = 1          # tiny: vanishes under both rules
    # masks[2] empty at the original size: stays empty
    for mode in ('nearest', 'area'):
        plain = pool_prompt_masks(masks, mode=mode)
        fixed = pool_prompt_masks(masks, mode=mode, ensure_nonempty=True)
        assert plain[1].sum() == 0
        assert torch.equal(fixed[0], plain[0])
        assert fixed[1].sum() == 1
        # rows 451..453 -> cell 451*16//480 = 15; cols 601,602 -> 15
        assert fixed[1, 15, 15]
        assert fixed[2].sum() == 0 and plain[2].sum() == 0


def test_ensure_nonempty_picks_most_covered_cell():
    h, w = 160, 160  # 10 x 10 pixel cells
    m = np.zeros((1, h, w), np.uint8)
    m[0, 12:14, 21:22] = 1   # 2 pixels in cell (1, 2)
    m[0, 55:58, 71:72] = 1   # 3 pixels in cell (5, 7)
    fixed = pool_prompt_masks(m, mode='nearest', ensure_nonempty=True)
    assert fixed.sum() == 1 and fixed[0, 5, 7]


def test_region_counts_and_prompt_text():
    pm = torch.zeros(2, 16, 16, dtype=torch.bool)
    pm[0, :2, :3] = True
    pm[1, 5, 5] = True
    assert region_token_counts(pm) == [6, 1]
    text = visual_prompt_text([2, 1])
    assert text == ('There are 2 part regions in the picture: '
                    'region1<vp><IMG_CONTEXT><IMG_CONTEXT></vp>, '
                    'region2<vp><IMG_CONTEXT></vp>.\n')
    assert visual_prompt_text([3]) == (
        'There are 1 part regions in the picture: region1<vp>'
        '<IMG_CONTEXT><IMG_CONTEXT><IMG_CONTEXT></vp>.\n')
    assert visual_prompt_text([300, 0], compact=True) == (
        'There are 2 part regions in the picture: region1<vp>'
        '<IMG_CONTEXT*300></vp>, region2<vp></vp>.\n')


# ---------------------------------------------------------------------------
# mask <-> caption option A
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('scale', [1, 255])
def test_mask_caption_item(scale):
    img = _random_image(300, 200, seed=5)
    mask = np.zeros((200, 300), np.uint8)
    mask[50:120, 30:200] = scale
    item = mask_caption_item(img, mask, caption='a box')
    ref_img = T.Compose([T.Resize((1024, 1024),
                                  interpolation=InterpolationMode.BILINEAR),
                         T.ToTensor(), T.Normalize(MEAN, STD)])(img)
    assert torch.equal(item['image1'], ref_img)
    assert item['mask1'].dtype == torch.float32
    assert item['mask1'].shape == (1024, 1024)
    assert set(item['mask1'].unique().tolist()) == {0.0, 1.0}
    ref_mask = np.asarray(Image.fromarray((mask > 0).astype(np.uint8)).resize(
        (1024, 1024), Image.NEAREST))
    assert np.array_equal(item['mask1'].numpy(), ref_mask.astype(np.float32))
    # The SAM2 input comes from the raw bytes, not from image1.
    assert torch.equal(item['g_pixel_values'], sam2_pixel_values(img))
    assert item['caption'] == 'a box'

    batch = derive_mask_caption_batch(item['image1'][None], item['mask1'][None])
    assert torch.equal(batch['pixel_values'], F.interpolate(
        ref_img[None], size=(448, 448), mode='bilinear', align_corners=False))
    assert batch['prompt_masks'].dtype == torch.bool
    assert torch.equal(batch['prompt_masks'], F.interpolate(
        item['mask1'][None, None], size=(16, 16), mode='nearest')[:, 0] > 0)
    assert batch['gt_masks'].shape == (1, 1024, 1024)

    # as_uint8: the resized bytes and a uint8 mask; derived on device, the
    # tiles, grids and GT are the float route's exactly
    raw = mask_caption_item(img, mask, caption='a box', as_uint8=True)
    assert raw['image1'].dtype == torch.uint8 and raw['mask1'].dtype == torch.uint8
    assert torch.equal(raw['mask1'].float(), item['mask1'])
    assert torch.equal(raw['g_pixel_values'], item['g_pixel_values'])
    from_raw = derive_mask_caption_batch(raw['image1'][None], raw['mask1'][None])
    for key in ('pixel_values', 'prompt_masks', 'gt_masks'):
        assert from_raw[key].dtype == batch[key].dtype, key
        assert torch.equal(from_raw[key], batch[key]), key


def test_mask_caption_item_rejects_size_mismatch():
    with pytest.raises(ValueError, match='differs from the image'):
        mask_caption_item(_random_image(30, 20), np.zeros((21, 30)))
