"""The tiny Qwen2.5-VL / Qwen3-VL demos (configs/sa2va_qwen*_tiny_demo.py):
the 21 datasets of the six families through their swapped pipelines, the
Qwen-VL collate and the model (visual-prompt rows at their positions for two
image sizes), and the real ``tools/train.py`` command. Qwen-VL needs the
current stack: skipped on the legacy one."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
BACKBONES = ('qwen2_5_vl', 'qwen3_vl')


def _need(backbone):
    from projects.sa2va.models.qwen_vl import qwen_vl_class
    try:
        qwen_vl_class(backbone)
    except ImportError as exc:
        pytest.skip(str(exc))


def _config(backbone):
    return REPO / 'configs' / f'sa2va_{backbone}_tiny_demo.py'


@pytest.fixture(scope='module')
def qwen_cwd(sample_cwd):
    """``sample_cwd`` (data/sample of every family) plus the tiny Qwen-VL
    tokenizer, as ``tools/make_sample_data.py`` writes it."""
    from projects.sa2va.tokenization import build_tiny_tokenizer
    path = sample_cwd / 'data' / 'sample' / 'tokenizer_qwen_vl'
    if not path.is_dir():
        build_tiny_tokenizer(path, image_tokens='qwen_vl')
    return sample_cwd


def _in_dir(cwd, fn):
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return fn()
    finally:
        os.chdir(old)


def _build(backbone, cwd, **dataset):
    """The demo's config (dataset settings updated) and its built mix."""
    from mmengine.config import Config

    from projects.sa2va.datasets.inspect import build_dataset_from_config
    cfg = Config.fromfile(str(_config(backbone)))
    cfg.train_dataloader.dataset.update(dataset)
    return cfg, _in_dir(cwd, lambda: build_dataset_from_config(cfg))


def test_demo_configs_use_the_model_bases_settings():
    """The demos pass what the tiny model bases define: their swap table,
    their text settings (for every text step) and the Qwen-VL collate."""
    from mmengine.config import Config
    for backbone in BACKBONES:
        demo = Config.fromfile(str(_config(backbone)))
        base = Config.fromfile(str(REPO / 'configs' / '_base_' / 'models'
                                   / f'sa2va_{backbone}_tiny.py'))
        data = demo.train_dataloader.dataset
        assert data.pipeline_swaps == base.qwen_vl_pipeline_swaps
        assert data.pipeline_swaps.PoolPromptMasks.backbone == backbone
        for step in ('EncodeConversation', 'EncodeLLaVAConversation'):
            assert data.pipeline_overrides[step].items() >= base.qwen_vl_text_settings.items()
        assert demo.train_dataloader.collate_fn == base.qwen_vl_collate_fn
        assert demo.model.tokenizer == base.model.tokenizer
        assert demo.model.mllm == base.model.mllm


def _vp_rows_match(model, data, grids_per_sample):
    """Each visual-prompt sample's <vp> rows are its image's merged features
    at the True cells of its prompt masks (row-major, region by region)."""
    mllm = model.mllm
    ids = data['input_ids']
    with torch.no_grad():
        inputs = mllm.build_inputs(ids, data['pixel_values'], data['image_grid_thw'],
                                   data['image_flags'], data['vp_overall_mask'],
                                   data['prompt_masks'], data['attention_mask'].long())
        feats = list(mllm.hf_model.model.get_image_features(
            data['pixel_values'], data['image_grid_thw'], return_dict=True).pooler_output)
    vp_start, vp_end = (model.tokenizer.convert_tokens_to_ids(t) for t in ('<vp>', '</vp>'))
    first_image = [0]
    for n in grids_per_sample:
        first_image.append(first_image[-1] + n)
    prompts = iter(data['prompt_masks'])
    checked = []
    for b in range(ids.shape[0]):
        img = first_image[b]
        if grids_per_sample[b] == 0 or not bool(data['vp_overall_mask'][img]):
            continue
        masks = next(prompts)
        inside = (ids[b] == vp_start).long().cumsum(0) > (ids[b] == vp_end).long().cumsum(0)
        pos = (inside & (ids[b] == mllm.image_token_id)).nonzero().flatten()
        expected = torch.cat([feats[img][m.flatten()] for m in masks])
        assert pos.numel() == expected.shape[0] == int(masks.sum())
        torch.testing.assert_close(inputs['inputs_embeds'][b, pos], expected)
        checked.append(tuple(masks.shape[1:]))
    return checked


@pytest.mark.parametrize('backbone', BACKBONES)
def test_every_dataset_through_its_swapped_pipeline_to_the_model(backbone, qwen_cwd):
    """Sample 0 of each of the 21 datasets (six families) with the Qwen-VL
    steps swapped in, plus one visual-prompt sample at a larger image budget;
    one collated batch: finite losses, gradients on exactly the trainable
    set, <vp> rows at their positions for both image sizes."""
    _need(backbone)
    from mmengine.registry import MODELS

    from projects.sa2va.datasets import sa2va_qwen_vl_collate_fn
    from projects.sa2va.datasets.inspect import leaf_datasets
    cfg, mix = _build(backbone, qwen_cwd)
    leaves = leaf_datasets(mix)
    assert len(leaves) == 21
    samples = [_in_dir(qwen_cwd, lambda d=d: d[0]) for d in leaves]
    # a second size: the same Osprey record with a 6 x 6 merged-token budget
    unit = 28 if backbone == 'qwen2_5_vl' else 32
    big = _build(backbone, qwen_cwd, pipeline_overrides=dict(
        cfg.train_dataloader.dataset.pipeline_overrides,
        QwenVLImageInput=dict(max_pixels=(6 * unit) ** 2)))[1]
    osprey = [d for d in leaf_datasets(big) if d.dataset_name == 'osprey_conversation']
    samples.append(_in_dir(qwen_cwd, lambda: osprey[0][0]))
    assert all('image_grid_thw' in s for s in samples)  # sample 0 of LLaVA has an image
    batch = sa2va_qwen_vl_collate_fn(samples, pad_index=0)
    assert batch['data_stats']['samples'] == 22
    torch.manual_seed(0)
    model = _in_dir(qwen_cwd, lambda: MODELS.build(cfg.model)).train()
    data = model.data_preprocessor(batch, True)
    sizes = _vp_rows_match(model, data, [len(s['image_grid_thw']) for s in samples])
    assert len(sizes) == 8 and len(set(sizes)) == 2, sizes  # 6 VP + describe + big
    losses = model(**data, mode='loss')
    assert set(losses) == {'loss_llm', 'loss_mask', 'loss_dice'}
    assert all(torch.isfinite(v) and float(v) > 0 for v in losses.values()), losses
    model.parse_losses(losses)[0].backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize('backbone', BACKBONES)
def test_train_command_runs_the_demo_on_all_six_families(backbone, qwen_cwd, tmp_path):
    """``python tools/train.py configs/sa2va_<backbone>_tiny_demo.py`` for 2
    iterations; repeats 1 / len(dataset) leave one sample per dataset, so each
    batch of 21 holds all 21 datasets of the six families."""
    _need(backbone)
    from projects.sa2va.datasets.inspect import leaf_datasets
    _, mix = _build(backbone, qwen_cwd)
    repeats = [1.0 / len(d) for d in leaf_datasets(mix)]
    assert [math.floor(r * len(d) + 0.5) for r, d in zip(repeats, leaf_datasets(mix))] == [1] * 21
    work = tmp_path / 'work'
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    cmd = [sys.executable, str(REPO / 'tools' / 'train.py'), str(_config(backbone)),
           '--work-dir', str(work), '--cfg-options', 'train_cfg.max_iters=2',
           'train_dataloader.batch_size=21',
           'train_dataloader.sampler.per_device_batch_size=21',
           'train_dataloader.dataset.repeats=[' + ','.join(map(repr, repeats)) + ']',
           'default_hooks.logger.interval=1', 'default_hooks.checkpoint.interval=2']
    proc = subprocess.run(cmd, cwd=qwen_cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    logs = [json.loads(line) for path in work.glob('*/vis_data/scalars.json')
            for line in path.read_text().splitlines()]
    losses = {r['step']: r for r in logs if 'loss' in r}
    assert sorted(losses) == [1, 2]
    for rec in losses.values():
        for key in ('loss', 'loss_llm', 'loss_mask', 'loss_dice'):
            assert math.isfinite(rec[key]) and rec[key] > 0, rec
    assert (work / 'iter_2.pth').is_file()
    assert 'samples=42' in proc.stdout + proc.stderr  # DataStatsHook: 2 x 21
