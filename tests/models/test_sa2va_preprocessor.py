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


def _option_a_batch():
    """A visual-prompt sample (uint8 tile) between two option-A samples: a
    describe one (image + mask) and a segment one (image only)."""
    from projects.sa2va.datasets.collate import sa2va_collate_fn
    g = torch.Generator().manual_seed(1)
    image_d, image_s = torch.randn(2, 3, 64, 64, generator=g)
    mask_d = torch.zeros(64, 64)
    mask_d[:32, :32] = 1            # top-left quarter -> grid cells (0..7, 0..7)
    mask_d[60:, 60:] = 1            # 4 x 4 corner -> cell (15, 15)
    vp_grid = torch.zeros(1, 16, 16, dtype=torch.bool)
    vp_grid[0, 3, 4] = True
    samples = [
        dict(input_ids=[1, 2], labels=[-100, 2], option_a_image=image_d,
             option_a_mask=mask_d),
        dict(input_ids=[3], labels=[3],
             pixel_values=torch.randint(0, 256, (2, 3, 28, 28), dtype=torch.uint8,
                                        generator=g),
             prompt_masks=vp_grid, vp_overall_mask=torch.tensor([True, False])),
        dict(input_ids=[4, 5, 6], labels=[4, 5, 6], option_a_image=image_s,
             g_pixel_values=torch.zeros(3, 64, 64, dtype=torch.uint8),
             masks=torch.ones(1, 64, 64, dtype=torch.uint8)),
    ]
    return samples, sa2va_collate_fn(samples), (image_d, image_s, mask_d, vp_grid)


def test_mask_caption_option_a_collate_leaves_placeholders():
    _, batch, (image_d, image_s, mask_d, vp_grid) = _option_a_batch()
    assert batch['pixel_values'].shape == (4, 3, 28, 28)
    assert batch['pixel_values'].dtype == torch.uint8
    assert batch['pixel_values'][[0, 3]].sum() == 0          # placeholders
    assert batch['num_tiles'] == [1, 2, 1]
    assert batch['image_flags'].tolist() == [1, 1, 1, 1]
    assert batch['vp_overall_mask'].tolist() == [True, True, False, False]
    assert batch['prompt_masks'][0] is None and torch.equal(batch['prompt_masks'][1], vp_grid)
    assert torch.equal(batch['option_a_images'], torch.stack([image_d, image_s]))
    assert batch['option_a_tile_index'].tolist() == [0, 3]
    assert torch.equal(batch['option_a_masks'], mask_d[None])
    assert batch['option_a_prompt_index'].tolist() == [0]
    assert batch['grounding_index'] == [2]


def test_mask_caption_option_a_derivation_fills_the_placeholders():
    from projects.sa2va.transforms.functional import normalize_uint8
    samples, batch, (image_d, image_s, mask_d, vp_grid) = _option_a_batch()
    out = Sa2VADataPreprocessor(image_size=28, grid=16)(batch, True)
    assert not any(k.startswith('option_a') for k in out)
    pv = out['pixel_values']
    assert pv.shape == (4, 3, 28, 28) and pv.dtype == torch.float32
    tiles = torch.nn.functional.interpolate(torch.stack([image_d, image_s]), size=(28, 28),
                                            mode='bilinear', align_corners=False)
    assert torch.equal(pv[0], tiles[0]) and torch.equal(pv[3], tiles[1])
    assert torch.equal(pv[1:3], normalize_uint8(samples[1]['pixel_values']))
    pm = out['prompt_masks']
    assert pm[0].dtype == torch.bool and pm[0].shape == (1, 16, 16)
    assert pm[0][0, :8, :8].all() and pm[0].sum() == 65 and pm[0][0, 15, 15]
    assert torch.equal(pm[1], vp_grid)
    # the caller's batch is not modified in place
    assert batch['pixel_values'][0].sum() == 0 and batch['prompt_masks'][0] is None


def test_mask_caption_option_a_tile_size_must_match():
    _, batch, _ = _option_a_batch()
    with pytest.raises(ValueError, match='image_size must match'):
        Sa2VADataPreprocessor(image_size=32)(batch, True)


def test_sample_without_text_is_named_by_the_collate():
    from projects.sa2va.datasets.collate import sa2va_collate_fn
    with pytest.raises(ValueError, match='sample 1 .*mask_caption_cycle_collate'):
        sa2va_collate_fn([dict(input_ids=[1], labels=[1]),
                          dict(image1=torch.zeros(3, 8, 8), meta=dict(dataset_name='mc_sa1b'))])
