"""Splicing of vision rows into <IMG_CONTEXT> positions, image_flags, visual-prompt indexing."""
import pytest
import torch

try:
    from internvl_helpers import ATOL, RTOL, VARIANTS, fixture_chat_model
except ImportError:  # collected as a package
    from tests.models.internvl_helpers import ATOL, RTOL, VARIANTS, fixture_chat_model

from projects.sa2va.models.internvl import merge_vision_embeddings, visual_prompt_rows

CTX = 7  # <IMG_CONTEXT> id of the hand-built examples


@torch.no_grad()
@pytest.mark.parametrize('name', VARIANTS)
def test_golden_merge_with_image_flags(name):
    model, config, golden = fixture_chat_model(name)
    ids = golden['merge_input_ids']
    flags = golden['merge_image_flags']
    assert flags.flatten().tolist() == [1, 0, 1]
    embeds = model.build_inputs_embeds(ids, golden['pixel_values'], flags)
    assert embeds.shape == golden['merge_inputs_embeds'].shape
    assert torch.allclose(embeds, golden['merge_inputs_embeds'], atol=ATOL, rtol=RTOL), \
        (embeds - golden['merge_inputs_embeds']).abs().max()
    # the fixture's documented positions: tile 0 -> seq 0 [3, 19), tile 2 -> seq 1 [2, 18)
    feats = model.extract_feature(golden['pixel_values'])
    assert torch.allclose(embeds[0, 3:19], feats[0], atol=ATOL)
    assert torch.allclose(embeds[1, 2:18], feats[2], atol=ATOL)
    text = ids != config['merge_fixture']['img_context_token_id']
    assert torch.equal(embeds[text], golden['merge_embed_table'][ids[text]])


def _batch(n_ctx_per_sample, length=40, d=4):
    """input_ids with the given number of CTX tokens per sample starting at position 2."""
    ids = torch.full((len(n_ctx_per_sample), length), 3, dtype=torch.long)
    for b, n in enumerate(n_ctx_per_sample):
        ids[b, 2:2 + n] = CTX
    embeds = -torch.ones(len(n_ctx_per_sample), length, d)
    return ids, embeds


def _tiles(n_tiles, n_tok=4, d=4):
    """Tile t, token k, channel c holds 1000 * t + 10 * k + c (every row is identifiable)."""
    t = torch.arange(n_tiles)[:, None, None] * 1000
    k = torch.arange(n_tok)[None, :, None] * 10
    c = torch.arange(d)[None, None, :]
    return (t + k + c).float()


def test_two_objects_put_expected_rows_at_expected_positions():
    # sample 0: tiles 0, 1 (1 = thumbnail carrying 2 prompts); sample 1: tile 2 (no prompt)
    tiles = _tiles(3)
    masks = torch.tensor([[[1, 0], [0, 1]],     # object 0 -> grid cells 0 and 3
                          [[0, 1], [1, 1]]]).bool()  # object 1 -> cells 1, 2, 3
    n0 = 4 + 4 + 2 + 3
    ids, embeds = _batch([n0, 4])
    out = merge_vision_embeddings(embeds, ids, tiles, torch.tensor([1, 1, 1]), CTX,
                                  vp_overall_mask=torch.tensor([False, True, False]),
                                  prompt_masks=[masks])
    rows0 = out[0, 2:2 + n0, 0].tolist()
    expected0 = [0, 10, 20, 30,                # tile 0
                 1000, 1010, 1020, 1030,       # tile 1
                 1000, 1030,                   # object 0: cells 0, 3 of tile 1
                 1010, 1020, 1030]             # object 1: cells 1, 2, 3 of tile 1
    assert rows0 == expected0
    assert out[1, 2:6, 0].tolist() == [2000, 2010, 2020, 2030]
    assert torch.equal(out[0, 2 + 9, :], tiles[1, 3])  # channels go with the row
    # every non-context position untouched
    assert torch.all(out[ids != CTX] == -1)
    assert torch.equal(visual_prompt_rows(tiles[1], masks)[:, 0],
                       torch.tensor([1000., 1030., 1010., 1020., 1030.]))


def test_prompt_rows_follow_dropped_dummy_tile_order():
    # sample 0 text-only (dummy tile, flag 0), sample 1 one tile with one object
    tiles = _tiles(2)
    masks = torch.tensor([[[0, 0], [1, 0]]]).bool()
    ids, embeds = _batch([0, 5])
    out = merge_vision_embeddings(embeds, ids, tiles, torch.tensor([[0], [1]]), CTX,
                                  vp_overall_mask=torch.tensor([False, True]),
                                  prompt_masks=[masks])
    assert out[1, 2:7, 0].tolist() == [1000, 1010, 1020, 1030, 1020]
    assert torch.all(out[0] == -1)


def test_gradient_reaches_vision_rows_and_text_embeddings():
    tiles = _tiles(1).requires_grad_(True)
    ids, embeds = _batch([4 + 1])
    embeds.requires_grad_(True)
    out = merge_vision_embeddings(embeds, ids, tiles, None, CTX, torch.tensor([True]),
                                  [torch.tensor([[[1, 0], [0, 0]]]).bool()])
    out.sum().backward()
    assert tiles.grad[0, :, 0].tolist() == [2.0, 1.0, 1.0, 1.0]  # cell 0 used twice
    assert embeds.grad[0, 0, 0] == 1.0 and embeds.grad[0, 2, 0] == 0.0


@pytest.mark.parametrize('counts, flags, vp, expect', [
    ([13, 3], [1, 1, 1], [False, True, False], 'sample 1: 3 <IMG_CONTEXT> positions .* 4 rows'),
    ([12, 4], [1, 1, 1], [False, True, False], 'sample 0: 12 <IMG_CONTEXT> positions .* 13'),
    ([14, 4], [1, 1, 1], [False, True, False], 'sample 0: 14 <IMG_CONTEXT> positions .* 17 rows'),
    ([13, 0], [1, 1, 1], [False, True, False], 'sample 1: 0 <IMG_CONTEXT> positions .* 4 rows'),
    ([13, 4], [1, 1, 1], [False, False, False], 'marks 0 tiles but 1 prompt_masks'),
    ([13, 4], [1, 0, 1], [False, True, False], 'image_flags 0'),
])
def test_mismatched_counts_raise(counts, flags, vp, expect):
    tiles = _tiles(3)
    masks = torch.tensor([[[1, 0], [0, 1]], [[0, 1], [1, 1]]]).bool()
    ids, embeds = _batch(counts)
    with pytest.raises(ValueError, match=expect):
        merge_vision_embeddings(embeds, ids, tiles, torch.tensor(flags), CTX,
                                vp_overall_mask=torch.tensor(vp), prompt_masks=[masks])


def test_context_tokens_without_images_raise():
    ids, embeds = _batch([4])
    with pytest.raises(ValueError, match='no pixel_values'):
        merge_vision_embeddings(embeds, ids, None, None, CTX)
    ids, embeds = _batch([0])
    assert merge_vision_embeddings(embeds, ids, None, None, CTX) is embeds


def test_prompt_mask_grid_must_match_tile():
    with pytest.raises(ValueError, match='9 cells per object but the tile has 4'):
        visual_prompt_rows(_tiles(1)[0], torch.ones(1, 3, 3, dtype=torch.bool))
