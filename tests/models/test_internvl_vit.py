"""InternViT, pixel shuffle and mlp1 against the reference golden tensors; manifest shapes."""
import json

import pytest
import torch

try:
    from internvl_helpers import ATOL, RTOL, VARIANTS, fixture_chat_model, require_fixtures
except ImportError:  # collected as a package
    from tests.models.internvl_helpers import (ATOL, RTOL, VARIANTS, fixture_chat_model,
                                               require_fixtures)

from projects.sa2va.compat import enable_activation_checkpointing
from projects.sa2va.models.internvl import (InternVisionConfig, InternVisionModel, build_mlp1,
                                            pixel_shuffle)
from projects.sa2va.models.internvl.modeling_intern_vit import DropPath


def assert_close(actual, expected, name):
    assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
    diff = (actual - expected).abs().max().item()
    assert torch.allclose(actual, expected, atol=ATOL, rtol=RTOL), f'{name}: max |diff| {diff}'


@pytest.fixture(scope='module', params=VARIANTS)
def variant(request):
    model, config, golden = fixture_chat_model(request.param)
    return request.param, model, config, golden


@torch.no_grad()
def test_every_golden_tensor(variant):
    name, model, config, golden = variant
    vm = model.vision_model
    out = vm(golden['pixel_values'], output_hidden_states=True)
    assert_close(vm.embeddings(golden['pixel_values']), golden['vit_embeddings_out'], 'embed')
    states = torch.stack(out.hidden_states)
    assert states.shape[0] == config['vision_config']['num_hidden_layers'] + 1
    assert_close(states, golden['vit_all_hidden_states'], 'hidden_states')
    assert_close(out.last_hidden_state, golden['vit_last_hidden_state'], 'last')
    assert_close(out.pooler_output, golden['vit_last_hidden_state'][:, 0], 'pooler')
    no_cls = out.last_hidden_state[:, 1:]
    assert_close(no_cls, golden['vit_embeds_no_cls'], 'no_cls')
    n, g = no_cls.shape[0], config['patch_grid'][0]
    grid = no_cls.reshape(n, g, g, -1)
    assert_close(grid, golden['pixel_shuffle_in_grid'], 'ps_in')
    shuffled = pixel_shuffle(grid, 0.5)
    assert_close(shuffled, golden['pixel_shuffle_out_grid'], 'ps_out')
    assert_close(shuffled.reshape(n, -1, shuffled.shape[-1]), golden['after_pixel_shuffle'],
                 'after_ps')
    feats = model.extract_feature(golden['pixel_values'])
    assert_close(feats, golden['mlp1_out'], 'mlp1_out')
    assert feats.shape == (n, config['num_image_token'], config['llm_hidden_size'])


@torch.no_grad()
def test_alt_size_interpolated_position_embedding(variant):
    name, model, config, golden = variant
    vm = model.vision_model
    alt = golden['alt_pixel_values']
    h = alt.shape[-1] // 14
    assert h == config['alt_patch_grid'][0]
    assert_close(vm.embeddings.interpolate_pos_embed(h, h), golden['alt_position_embedding_used'],
                 'alt_pos')
    assert_close(vm.embeddings(alt), golden['alt_vit_embeddings_out'], 'alt_embed')
    assert_close(vm(alt).last_hidden_state, golden['alt_vit_last_hidden_state'], 'alt_last')
    feats = model.extract_feature(alt)
    assert_close(feats, golden['alt_mlp1_out'], 'alt_mlp1')
    assert feats.shape[1] == config['alt_num_image_token']
    # native size: the bicubic resize is an exact identity
    g = config['patch_grid'][0]
    assert torch.equal(vm.embeddings.interpolate_pos_embed(g, g), vm.embeddings.position_embedding)


def test_pixel_shuffle_probe_channel_order():
    golden = fixture_chat_model(VARIANTS[0])[2]
    out = pixel_shuffle(golden['ps_probe_in'], 0.5)
    assert torch.equal(out, golden['ps_probe_out_v2'])
    assert not torch.equal(out, golden['ps_probe_out_v1'])
    assert out[0, 0, 0, ::8].tolist() == [0, 8, 32, 40]
    assert out[0, 0, 1, ::8].tolist() == [16, 24, 48, 56]


def test_pixel_shuffle_rejects_odd_grid():
    with pytest.raises(ValueError, match='not divisible'):
        pixel_shuffle(torch.zeros(1, 5, 5, 4))


@torch.no_grad()
@pytest.mark.parametrize('name', VARIANTS)
def test_eager_attention_matches_sdpa(name):
    sdpa, _, golden = fixture_chat_model(name)
    eager, _, _ = fixture_chat_model(name, attn_implementation='eager')
    assert sdpa.vision_model.encoder.layers[0].attn.use_sdpa
    assert not eager.vision_model.encoder.layers[0].attn.use_sdpa
    a = sdpa.extract_feature(golden['pixel_values'])
    b = eager.extract_feature(golden['pixel_values'])
    assert_close(b, golden['mlp1_out'], 'eager mlp1_out')
    assert (a - b).abs().max() < 1e-4


def tiny_vit_config(**kw):
    base = dict(image_size=56, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                num_hidden_layers=3, qkv_bias=True, qk_normalization=False,
                norm_type='layer_norm')
    base.update(kw)
    return InternVisionConfig(**base)


def test_drop_path_rates_and_behaviour():
    model = InternVisionModel(tiny_vit_config(drop_path_rate=0.2))
    rates = [layer.drop_path1.p for layer in model.encoder.layers]
    assert rates == pytest.approx([0.0, 0.1, 0.2])
    dp = DropPath(0.5).train()
    torch.manual_seed(0)
    x = torch.ones(64, 3, 2)
    y = dp(x)
    per_sample = y.reshape(64, -1)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}
    assert torch.all(per_sample.min(1).values == per_sample.max(1).values)  # whole sample
    assert torch.equal(dp.eval()(x), x)
    # eval mode of the whole tower is deterministic; train mode differs
    px = torch.randn(4, 3, 56, 56)
    model.eval()
    ref = model(px).last_hidden_state
    assert torch.equal(model(px).last_hidden_state, ref)
    model.train()
    torch.manual_seed(1)
    assert not torch.allclose(model(px).last_hidden_state, ref)


def test_gradient_checkpointing_same_gradients():
    torch.manual_seed(0)
    model = InternVisionModel(tiny_vit_config(norm_type='rms_norm', qk_normalization=True,
                                              qkv_bias=False))
    model.train()
    px = torch.randn(2, 3, 56, 56)

    def grads():
        model.zero_grad()
        model(px).last_hidden_state.square().mean().backward()
        return {k: p.grad.clone() for k, p in model.named_parameters()}

    plain = grads()
    enable_activation_checkpointing(model, use_reentrant=False)
    assert model.encoder.gradient_checkpointing
    ckpt = grads()
    assert plain.keys() == ckpt.keys()
    for k in plain:
        assert torch.allclose(plain[k], ckpt[k], atol=1e-6), k


def test_rms_tower_has_no_bias_keys():
    keys = InternVisionModel(tiny_vit_config(norm_type='rms_norm', qk_normalization=True,
                                             qkv_bias=False)).state_dict().keys()
    assert 'encoder.layers.0.attn.q_norm.weight' in keys
    assert 'encoder.layers.0.norm1.bias' not in keys
    assert 'encoder.layers.0.attn.qkv.bias' not in keys
    assert 'encoder.layers.0.attn.proj.bias' in keys


MANIFESTS = ('1B', '2B', '4B', '8B', '26B')


@pytest.mark.parametrize('size', MANIFESTS)
def test_full_size_keys_and_shapes_on_meta(size):
    path = require_fixtures() / 'manifests' / f'InternVL2_5-{size}.json'
    manifest = json.loads(path.read_text())
    vcfg = InternVisionConfig(**manifest['vision_config'])
    with torch.device('meta'):
        vision = InternVisionModel(vcfg)
        mlp1 = build_mlp1(vcfg.hidden_size, manifest['llm_config']['hidden_size'],
                          manifest['downsample_ratio'])
    shapes = {f'vision_model.{k}': list(v.shape) for k, v in vision.state_dict().items()}
    shapes.update({f'mlp1.{k}': list(v.shape) for k, v in mlp1.state_dict().items()})
    expected = manifest['params']
    assert sorted(set(shapes) - set(expected)) == []
    assert sorted(set(expected) - set(shapes)) == []
    assert shapes == expected
    n_vision = sum(v.numel() for v in vision.state_dict().values())
    n_mlp1 = sum(v.numel() for v in mlp1.state_dict().values())
    assert n_vision == manifest['param_counts']['vision_model']
    assert n_mlp1 == manifest['param_counts']['mlp1']
    assert len(shapes) == sum(manifest['num_param_tensors'].values())


@torch.no_grad()
def test_select_layer_takes_that_hidden_state(variant):
    name, model, config, golden = variant
    model.select_layer = -2
    try:
        feats = model.extract_feature(golden['pixel_values'])
    finally:
        model.select_layer = -1
    state = golden['vit_all_hidden_states'][-2][:, 1:]
    g = config['patch_grid'][0]
    grid = pixel_shuffle(state.reshape(state.shape[0], g, g, -1), 0.5)
    expected = model.mlp1(grid.flatten(1, 2))
    assert_close(feats, expected, 'select_layer -2')
    assert (feats - golden['mlp1_out']).abs().max() > 1e-2
