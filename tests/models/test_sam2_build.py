"""Building SAM2: presets vs the official manifests (meta device), strict
checkpoint loading, config validation, registry entry, training setup."""
import json

import pytest
import torch

from projects.sa2va.models import build_sam2
from projects.sa2va.models.sam2 import (PRESETS, build_sam2_model,
                                        load_sam2_state_dict, preset_config,
                                        read_state_dict)
from projects.sa2va.registry import MODELS
from sam2_helpers import (MANIFESTS, TINY, require_fixtures, strip_targets,
                          tiny_config)

PRESET_NAMES = [f'{f}_hiera_{s}' for f in ('sam2', 'sam2.1')
                for s in ('t', 's', 'b+', 'l')]
BUFFER = 'sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix'


def _manifest(name):
    require_fixtures()
    return json.loads((MANIFESTS / f'{name}.json').read_text())


def test_preset_names():
    assert sorted(PRESETS) == sorted(PRESET_NAMES)
    with pytest.raises(KeyError, match='sam2_hiera_xl'):
        preset_config('sam2_hiera_xl')


@pytest.mark.parametrize('name', PRESET_NAMES)
def test_preset_is_the_official_yaml(name):
    assert preset_config(name) == strip_targets(
        _manifest(name)['yaml_model_config_resolved'])


@pytest.mark.parametrize('name', PRESET_NAMES)
def test_meta_model_matches_manifest(name):
    man = _manifest(name)
    model = build_sam2(name, device='meta')
    params = {k: list(p.shape) for k, p in model.named_parameters()}
    buffers = {k: list(b.shape) for k, b in model.named_buffers()}
    assert params == man['params']
    assert buffers == man['buffers'] == {BUFFER: [2, man['buffers'][BUFFER][1]]}
    assert list(model.state_dict()) == man['key_order']
    assert sum(p.numel() for p in model.parameters()) == \
        man['num_param_elements']
    hp = man['hyperparameters']
    trunk = model.image_encoder.trunk
    assert trunk.channel_list == hp['trunk']['channel_list']
    for blk, ref in zip(trunk.blocks, hp['trunk']['blocks']):
        assert (blk.dim, blk.dim_out, blk.window_size,
                blk.attn.num_heads, hasattr(blk, 'proj')) == (
            ref['dim'], ref['dim_out'], ref['window_size'], ref['num_heads'],
            ref['has_proj'])
    assert model.mem_dim == hp['mem_dim']


def test_tiny_per_block_table():
    require_fixtures()
    table = json.loads((TINY / 'config.json').read_text())[
        'hyperparameters']['trunk']
    with torch.device('meta'):
        trunk = build_sam2_model(tiny_config()).image_encoder.trunk
    assert trunk.stage_ends == table['stage_ends']
    assert trunk.q_pool_blocks == table['q_pool_blocks']
    for blk, ref in zip(trunk.blocks, table['blocks']):
        assert blk.window_size == ref['window_size']
        assert (blk.q_stride is not None) == (ref['q_stride'] is not None)


@pytest.fixture(scope='module')
def tiny_sd():
    require_fixtures()
    return read_state_dict(str(TINY / 'weights.safetensors'))


def _meta_tiny():
    with torch.device('meta'):
        return build_sam2_model(tiny_config())


def test_misshaped_key_is_named(tiny_sd):
    sd = dict(tiny_sd)
    key = 'sam_mask_decoder.iou_prediction_head.layers.2.weight'
    sd[key] = torch.zeros(5, sd[key].shape[1])
    with pytest.raises(ValueError, match='mis-shaped.*iou_prediction_head'
                                         r'\.layers\.2\.weight'):
        load_sam2_state_dict(_meta_tiny(), sd)


def test_missing_and_unexpected_keys_are_named(tiny_sd):
    sd = dict(tiny_sd)
    del sd[BUFFER]
    sd['obj_ptr_tpos_proj.extra'] = torch.zeros(1)
    with pytest.raises(ValueError) as err:
        load_sam2_state_dict(_meta_tiny(), sd)
    assert 'missing keys (1): ' + BUFFER in str(err.value)
    assert 'unexpected keys (1): obj_ptr_tpos_proj.extra' in str(err.value)


def test_sam2_checkpoint_refused_by_sam21_model(tiny_sd):
    """A SAM2 (not 2.1) checkpoint lacks exactly the three 2.1 keys."""
    sd = {k: v for k, v in tiny_sd.items()
          if k not in ('no_obj_embed_spatial', 'obj_ptr_tpos_proj.weight',
                       'obj_ptr_tpos_proj.bias')}
    with pytest.raises(ValueError, match=r'missing keys \(3\)'):
        load_sam2_state_dict(_meta_tiny(), sd)
    cfg = tiny_config()
    cfg['add_tpos_enc_to_obj_ptrs'] = False
    for k in ('no_obj_embed_spatial', 'proj_tpos_enc_in_obj_ptrs',
              'use_signed_tpos_enc_to_obj_ptrs'):
        cfg.pop(k)
    with torch.device('meta'):
        sam2_model = build_sam2_model(cfg)
    load_sam2_state_dict(sam2_model, sd)
    assert not sam2_model.state_dict()['obj_ptr_proj.layers.0.weight'].is_meta


def test_official_pt_layout_round_trip(tiny_sd, tmp_path):
    path = tmp_path / 'tiny.pt'
    torch.save({'model': tiny_sd}, path)
    model = build_sam2(tiny_config(), str(path))
    for k, v in model.state_dict().items():
        assert torch.equal(v, tiny_sd[k]), k
    torch.save({'weights': tiny_sd}, tmp_path / 'bad.pt')
    with pytest.raises(ValueError, match='expected'):
        build_sam2(tiny_config(), str(tmp_path / 'bad.pt'))


def test_unknown_config_key_raises():
    cfg = preset_config('sam2.1_hiera_t')
    cfg['image_encoder']['trunk']['embed_dimm'] = 96
    with pytest.raises(ValueError, match=r"image_encoder\.trunk.*embed_dimm"):
        build_sam2(cfg, device='meta')
    cfg = preset_config('sam2.1_hiera_t')
    cfg['use_magic'] = True
    with pytest.raises(ValueError, match='use_magic'):
        build_sam2(cfg, device='meta')


def test_registry_and_trainable_default(tiny_sd):
    model = MODELS.build(dict(type='SAM2', config=tiny_config(),
                              checkpoint=str(TINY / 'weights.safetensors')))
    assert not model.training
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith('sam_mask_decoder.')
                             for n in trainable)
    assert len(trainable) == sum(1 for n, _ in model.named_parameters()
                                 if n.startswith('sam_mask_decoder.'))
    model.set_trainable('all')
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match='nope'):
        model.set_trainable(['nope'])


@pytest.fixture(scope='module')
def tiny_model():
    require_fixtures()
    return build_sam2(tiny_config(), str(TINY / 'weights.safetensors'))


def test_language_prompt_backward_reaches_decoder_only(tiny_model):
    torch.manual_seed(0)
    images = torch.randn(2, 3, 256, 256)
    lang = torch.randn(2, 1, 64, requires_grad=True)
    tiny_model.zero_grad(set_to_none=True)
    out = tiny_model.forward_language_prompt(tiny_model.forward_image(images),
                                             lang)
    assert out['low_res_masks'].shape == (2, 1, 64, 64)
    out['low_res_masks'].sigmoid().mean().backward()
    grads = {n for n, p in tiny_model.named_parameters() if p.grad is not None}
    assert 'sam_mask_decoder.output_hypernetworks_mlps.0.layers.0.weight' in grads
    assert all(n.startswith('sam_mask_decoder.') for n in grads)
    assert lang.grad is not None and lang.grad.abs().sum() > 0


def test_image_index_equals_repeated_images(tiny_model):
    torch.manual_seed(1)
    images = torch.randn(2, 3, 256, 256)
    lang = torch.randn(3, 2, 64)
    index = torch.tensor([1, 0, 1])
    with torch.no_grad():
        bo = tiny_model.forward_image(images)
        ours = tiny_model.forward_language_prompt(bo, lang, image_index=index)
        ref = tiny_model.forward_language_prompt(
            tiny_model.forward_image(images[index]), lang)
    for k in ('low_res_masks', 'ious', 'object_score_logits'):
        torch.testing.assert_close(ours[k], ref[k], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match='image_index'):
        tiny_model.forward_language_prompt(bo, lang)


def test_bf16_autocast_cpu(tiny_model):
    """Runs under bf16 autocast (as Sa2VA does) and stays close to fp32."""
    require_fixtures()
    from safetensors.torch import load_file
    golden = load_file(str(TINY / 'golden.safetensors'))
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        out = tiny_model.forward_language_prompt(
            tiny_model.forward_image(golden['image']), golden['language_embd'])
    masks = out['low_res_multimasks'].float()
    ref = golden['low_res_multimasks']
    assert torch.isfinite(masks).all()
    rel = (masks - ref).norm() / ref.norm()
    assert rel < 0.1, rel


def test_pure_bf16_model(tiny_model):
    """A model cast to bf16 runs the image, language and tracking paths
    without autocast; outputs follow the model dtype."""
    import copy
    model = copy.deepcopy(tiny_model).to(torch.bfloat16)
    torch.manual_seed(2)
    images = torch.randn(1, 3, 256, 256, dtype=torch.bfloat16)
    lang = torch.randn(1, 1, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        bo = model.forward_image(images)
        out = model.forward_language_prompt(bo, lang)
        outs = model.propagate([bo, bo], language_embd=lang)
    assert out['low_res_masks'].dtype == torch.bfloat16
    assert out['low_res_masks'].shape == (1, 1, 64, 64)
    assert outs[1]['maskmem_features'].dtype == torch.bfloat16
    assert torch.isfinite(outs[1]['pred_masks_high_res']).all()


def test_prompt_encoder_points_boxes_masks(tiny_model):
    """Clicks add their label's embedding to the Fourier PE of the pixel
    centre; a box gives two corner tokens and suppresses the padding point;
    a mask prompt is downscaled to the embedding grid."""
    pe = tiny_model.sam_prompt_encoder
    gauss = pe.pe_layer.positional_encoding_gaussian_matrix

    def fourier(x, y):
        c = torch.tensor([(x + 0.5) / 256, (y + 0.5) / 256]) * 2 - 1
        a = 2 * torch.pi * (c @ gauss)
        return torch.cat([a.sin(), a.cos()])

    coords = torch.tensor([[[10.0, 200.0], [128.0, 3.0]]])
    labels = torch.tensor([[1, 0]], dtype=torch.int32)
    with torch.no_grad():
        sparse, dense = pe((coords, labels), boxes=None, masks=None)
        assert sparse.shape == (1, 3, 64)
        torch.testing.assert_close(
            sparse[0, 0], fourier(10, 200) + pe.point_embeddings[1].weight[0])
        torch.testing.assert_close(
            sparse[0, 1], fourier(128, 3) + pe.point_embeddings[0].weight[0])
        assert torch.equal(sparse[0, 2], pe.not_a_point_embed.weight[0])
        assert torch.equal(dense[0, :, 5, 7], pe.no_mask_embed.weight[0])

        boxes = torch.tensor([[4.0, 8.0, 100.0, 60.0]])
        sparse, _ = pe((coords, labels), boxes=boxes, masks=None)
        assert sparse.shape == (1, 4, 64)
        torch.testing.assert_close(
            sparse[0, 2], fourier(4, 8) + pe.point_embeddings[2].weight[0])
        torch.testing.assert_close(
            sparse[0, 3], fourier(100, 60) + pe.point_embeddings[3].weight[0])

        _, dense = pe(None, None, torch.zeros(1, 1, 64, 64))
        assert dense.shape == (1, 64, 16, 16)
        assert not torch.equal(dense[0, :, 0, 0], pe.no_mask_embed.weight[0])


def test_track_step_with_clicks(tiny_model):
    """A click prompt on the first frame (single point -> multimask) and a
    propagated second frame produce the documented shapes."""
    torch.manual_seed(3)
    with torch.no_grad():
        bo = tiny_model.forward_image(torch.randn(1, 3, 256, 256))
        feats, pos, sizes = tiny_model.prepare_backbone_features(bo)
        bank = {'cond_frame_outputs': {}, 'non_cond_frame_outputs': {}}
        points = {'point_coords': torch.tensor([[[100.0, 120.0]]]),
                  'point_labels': torch.tensor([[1]], dtype=torch.int32)}
        assert tiny_model._use_multimask(True, points)
        bank['cond_frame_outputs'][0] = out0 = tiny_model.track_step(
            0, True, feats, pos, sizes, points, None, bank, num_frames=2)
        out1 = tiny_model.track_step(1, False, feats, pos, sizes, None, None,
                                     bank, num_frames=2)
    for out in (out0, out1):
        assert out['pred_masks'].shape == (1, 1, 64, 64)
        assert out['pred_masks_high_res'].shape == (1, 1, 256, 256)
        assert out['obj_ptr'].shape == (1, 64)
        assert out['maskmem_features'].shape == (1, 16, 16, 16)
        assert out['maskmem_pos_enc'][0].shape == (1, 16, 16, 16)
