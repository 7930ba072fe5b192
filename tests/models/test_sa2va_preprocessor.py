"""Sa2VADataPreprocessor: tiles, SAM2 frames, option A, dtypes."""
import pytest
import torch

from projects.sa2va.models import Sa2VADataPreprocessor, normalize_sam2_images
from projects.sa2va.transforms.functional import normalize_uint8


def _batch():
    g = torch.Generator().manual_seed(0)
    u8 = lambda *s: torch.randint(0, 256, s, dtype=torch.uint8, generator=g)  # noqa: E731
    return dict(input_ids=torch.ones(2, 5, dtype=torch.long),
                pixel_values=u8(3, 3, 28, 28),
                g_pixel_values=[u8(3, 32, 32), u8(3, 32, 32), u8(3, 32, 32)],
                frames_per_batch=[1, 2], masks=[u8(1, 7, 9), u8(4, 5, 6)],
                data_stats={'samples': 2}, meta=[{}, {}])


def test_tiles_and_sam2_frames_are_normalised_and_batched():
    raw = _batch()
    out = Sa2VADataPreprocessor()(dict(raw), True)
    assert 'data_stats' not in out and 'meta' not in out
    assert torch.equal(out['pixel_values'], normalize_uint8(raw['pixel_values']))
    g = out['g_pixel_values']
    assert g.shape == (3, 3, 32, 32) and g.dtype == torch.float32
    expected = normalize_sam2_images(torch.stack(raw['g_pixel_values']))
    assert torch.equal(g, expected)
    # one hand-checked value: (x / 255 - 0.485) / 0.229 for the red channel
    x = raw['g_pixel_values'][1][0, 3, 4].item()
    assert g[1, 0, 3, 4].item() == pytest.approx((x / 255 - 0.485) / 0.229, abs=1e-5)
    # GT masks are only moved, never resized
    assert [m.shape for m in out['masks']] == [(1, 7, 9), (4, 5, 6)]
    assert out['masks'][1].dtype == torch.uint8


def test_dtype_casting_and_empty_frames():
    raw = _batch()
    raw['g_pixel_values'] = []
    out = Sa2VADataPreprocessor(dtype='bfloat16')(raw, False)
    assert out['pixel_values'].dtype == torch.bfloat16
    assert out['g_pixel_values'] is None
    raw = _batch()
    out = Sa2VADataPreprocessor(dtype='bfloat16', sam2_dtype='float32')(raw, False)
    assert out['g_pixel_values'].dtype == torch.float32
    with pytest.raises(ValueError, match='unknown floating dtype'):
        Sa2VADataPreprocessor(dtype='int8')


def test_frames_of_different_sizes_raise():
    raw = _batch()
    raw['g_pixel_values'][2] = torch.zeros(3, 16, 16, dtype=torch.uint8)
    with pytest.raises(ValueError, match='differ in shape'):
        Sa2VADataPreprocessor()(raw, False)


def test_mask_caption_option_a_derivation():
    image1 = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    mask1 = torch.zeros(2, 64, 64)
    mask1[0, :32, :32] = 1          # top-left quarter -> grid cells (0..7, 0..7)
    mask1[1, 60:, 60:] = 1          # 4 x 4 corner -> cell (15, 15)
    raw = dict(input_ids=torch.ones(2, 3, dtype=torch.long), image1=image1, mask1=mask1,
               captions=['a', 'b'])
    out = Sa2VADataPreprocessor(image_size=28, grid=16)(raw, True)
    assert 'image1' not in out and 'mask1' not in out and out['captions'] == ['a', 'b']
    assert out['mc_pixel_values'].shape == (2, 3, 28, 28)
    pm = out['mc_prompt_masks']
    assert pm.dtype == torch.bool and pm.shape == (2, 16, 16)
    assert pm[0, :8, :8].all() and pm[0].sum() == 64
    assert pm[1].sum() == 1 and pm[1, 15, 15]
    assert torch.equal(out['mc_gt_masks'], mask1)
