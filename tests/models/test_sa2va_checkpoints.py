"""Sa2VAModel with real-format checkpoints: an InternVL directory, an official
SAM2 ``.pt``, a run checkpoint as ``pretrained_pth``; one optimiser step; bf16."""

import pytest
import torch

from test_sa2va import CONFIG, build_tiny, collate, family_samples, run_loss


@pytest.fixture(scope='module')
def real_format(tmp_path_factory):
    """A tiny InternVL checkpoint directory (with its tokenizer, no Sa2VA
    tokens) and a tiny SAM2 checkpoint in the official ``{'model': ...}``."""
    from mmengine.config import Config
    from projects.sa2va.models import build_sam2
    from projects.sa2va.models.internvl import save_tiny_internvl
    root = tmp_path_factory.mktemp('real_format')
    internvl_dir = save_tiny_internvl(root / 'InternVL2_5-tiny', seed=1)
    sam2_cfg = Config.fromfile(str(CONFIG)).sa2va_tiny_sam2.to_dict()
    torch.manual_seed(1)
    sam2 = build_sam2(sam2_cfg)
    torch.save({'model': sam2.state_dict()}, root / 'sam2_tiny.pt')
    return dict(internvl=internvl_dir, sam2=root / 'sam2_tiny.pt', sam2_cfg=sam2_cfg)


def _build_from_files(real_format, **extra):
    from mmengine.registry import DefaultScope, MODELS
    cfg = dict(
        type='Sa2VAModel', tokenizer=None,
        mllm=dict(type='InternVLChat', model_path=str(real_format['internvl']),
                  llm_lora=dict(r=4, lora_alpha=8, lora_dropout=0.0)),
        grounding_encoder=dict(type='SAM2', config=real_format['sam2_cfg'],
                               checkpoint=str(real_format['sam2'])),
        num_points=256, **extra)
    with DefaultScope.overwrite_default_scope('sa2va'):
        return MODELS.build(cfg)


def test_loads_internvl_directory_and_sam2_pt_then_a_run_checkpoint(real_format, tmp_path):
    from mmengine.optim import OptimWrapper
    from safetensors.torch import load_file
    model = _build_from_files(real_format).train()
    # tokenizer read from model_path, Sa2VA tokens added, embeddings grown once
    assert len(model.tokenizer) == 1029 and model.seg_token_id == 1024
    weights = load_file(str(real_format['internvl'] / 'model.safetensors'))
    key = 'vision_model.encoder.layers.0.attn.qkv.weight'
    assert torch.equal(model.mllm.vision_model.state_dict()[key.split('vision_model.')[1]],
                       weights[key])
    sam2_sd = torch.load(real_format['sam2'], weights_only=True)['model']
    k = 'sam_mask_decoder.transformer.layers.0.self_attn.q_proj.weight'
    assert torch.equal(model.grounding_encoder.state_dict()[k], sam2_sd[k])

    # one optimiser step through mmengine's train_step: only trainable weights move
    samples = family_samples(model.tokenizer)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    optim = OptimWrapper(torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05),
                         clip_grad=dict(max_norm=1.0))
    log = model.train_step(collate([samples['res'], samples['vqa']]), optim)
    assert set(log) == {'loss', 'loss_llm', 'loss_mask', 'loss_dice'}
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {n for n, p in model.named_parameters() if p.requires_grad}

    # the run checkpoint holds only those; a fresh model continues from it
    torch.save({'meta': {}, 'state_dict': model.state_dict()}, tmp_path / 'iter_1.pth')
    again = _build_from_files(real_format, pretrained_pth=str(tmp_path / 'iter_1.pth'))
    full_a = model.state_dict(trainable_only=False)
    full_b = again.state_dict(trainable_only=False)
    assert set(full_a) == set(full_b)
    assert all(torch.equal(full_a[k], full_b[k]) for k in full_a)


def test_bf16_llm_with_fp32_sam2(tiny_tokenizer_dir):
    model = build_tiny(tiny_tokenizer_dir, data_preprocessor=dict(
        type='Sa2VADataPreprocessor', dtype='bfloat16', sam2_dtype='float32'))
    model.mllm.to(torch.bfloat16)
    model.train()
    samples = family_samples(model.tokenizer)
    losses = run_loss(model, collate([samples['res'], samples['text']]))
    assert all(torch.isfinite(v) for v in losses.values())
    model.parse_losses(losses)[0].backward()
    assert model.text_hidden_fcs[0].weight.grad.abs().sum() > 0
    lora_b = [p for n, p in model.named_parameters() if '.lora_B.' in n]
    assert lora_b[0].dtype == torch.bfloat16 and lora_b[0].grad.abs().sum() > 0
