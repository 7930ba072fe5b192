"""Training model -> the released Hugging Face layout
(``tools/export.py CKPT --format hf``): key for key the official tiny
checkpoint's layout, the official config.json fields, tokenizer and
generation config, sharding, file modes; the export imports back with equal
logits and masks; ``tools/predict.py --hf-dir`` loads it, and the official
checkpoint, with the official prompt."""
from __future__ import annotations

import json
import stat

import pytest
import torch

from .helpers import build, fixed_outputs, fixture_dir, golden, write_tiny_config


@pytest.fixture(scope='module')
def gold():
    return golden()


@pytest.fixture(scope='module')
def exported(tmp_path_factory, tiny_tokenizer_dir, gold):
    """A "trained" tiny model (non-zero LoRA B, moved [SEG] ... rows, moved
    lm_head and text_hidden_fcs) saved as a trainable-only run checkpoint,
    its outputs, and its --format hf export (sharded at 2 MB)."""
    root = tmp_path_factory.mktemp('hf_export')
    cfg = write_tiny_config(root / 'tiny_hf.py', tiny_tokenizer_dir, gold[0]['tiny_sam2'])
    model = build(cfg)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    assert any('.lora_B.' in n for n, _ in model.named_parameters())
    ckpt = root / 'iter_1.pth'
    torch.save({'state_dict': model.state_dict()}, ckpt)
    ref = fixed_outputs(model, *gold)
    from tools.export import main
    out = root / 'Sa2VA-tiny-hf'
    main([str(ckpt), '--config', str(cfg), '--out', str(out), '--format', 'hf',
          '--max-shard-gb', '0.002'])
    return dict(cfg=cfg, ckpt=ckpt, ref=ref, dir=out, model=model)


def test_export_is_the_official_layout_key_for_key(exported, gold):
    from projects.sa2va.hf import HFWeights
    mine, theirs = HFWeights(exported['dir']), HFWeights(fixture_dir() / 'checkpoint')
    assert mine.keys() == theirs.keys()
    assert all(mine.shape(k) == theirs.shape(k) for k in mine.keys())
    assert not any('lora' in k or 'base_layer' in k or 'token_adapter' in k
                   for k in mine.keys())
    # LoRA and the trained rows are folded in: the merged [SEG] rows are the
    # trained ones
    model = exported['model']
    delta = model.mllm.get_input_embeddings().token_adapter.trainable_tokens_delta
    assert torch.equal(mine.get('language_model.model.embed_tokens.weight')[1024:],
                       delta['default'].detach())
    # sharded above the limit, with the index; every file group-readable
    names = sorted(p.name for p in exported['dir'].iterdir())
    assert 'model.safetensors.index.json' in names
    assert sum(n.startswith('model-') for n in names) >= 3
    for p in exported['dir'].iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p.name


def test_export_config_tokenizer_and_generation_config(exported, gold):
    out = exported['dir']
    cfg = json.loads((out / 'config.json').read_text())
    official = json.loads((fixture_dir() / 'checkpoint/config.json').read_text())
    for key in ('architectures', 'auto_map', 'model_type', 'downsample_ratio',
                'force_image_size', 'ps_version', 'select_layer', 'template',
                'tie_word_embeddings', 'use_backbone_lora', 'use_llm_lora',
                'dynamic_image_size', 'use_thumbnail', 'hidden_size'):
        assert cfg[key] == official[key], key
    assert cfg['llm_config']['vocab_size'] == gold[0]['len_tokenizer'] == 1029
    assert cfg['llm_config']['architectures'] == ['Qwen2ForCausalLM']
    assert cfg['vision_config']['architectures'] == ['InternVisionModel']
    assert cfg['sa2va_training']['special_tokens'] == \
        ['[SEG]', '<p>', '</p>', '<vp>', '</vp>']
    gen = json.loads((out / 'generation_config.json').read_text())
    assert set(gen) == {'_from_model_config', 'transformers_version'}
    added = json.loads((out / 'added_tokens.json').read_text())
    assert added == json.loads((fixture_dir() / 'checkpoint/added_tokens.json').read_text())
    special = {t['id'] for t in json.loads((out / 'tokenizer.json').read_text())['added_tokens']
               if t['special']}
    assert set(added.values()) <= special


def test_export_imports_back_with_equal_outputs(exported, gold, tmp_path):
    """--format hf -> --import-hf -> pretrained_pth, and pretrained_hf
    directly: logits, [SEG] states, prompts and masks equal (fp32)."""
    from tools.export import main
    pth = tmp_path / 'back.pth'
    main(['--import-hf', str(exported['dir']), '--config', str(exported['cfg']),
          '--out', str(pth)])
    for model in (build(exported['cfg'], pretrained_pth=str(pth)),
                  build(exported['cfg'], pretrained_hf=str(exported['dir']))):
        got = fixed_outputs(model, *gold)
        for key, ref in exported['ref'].items():
            if key == 'gen_ids':
                assert torch.equal(got[key], ref)
            else:
                assert (got[key] - ref).abs().max() <= 1e-5, key
        lora_b = [p for n, p in model.named_parameters() if '.lora_B.' in n]
        assert all(p.abs().sum() == 0 for p in lora_b)  # adapters start fresh


def test_predict_hf_dir_runs_the_official_prompt(tmp_path, exported, gold):
    """tools/predict.py --hf-dir on the official checkpoint (SAM2 from the
    config): the prompt is the official one and the greedy answer the
    official model's; on the export (SAM2 from its config.json) it runs."""
    from PIL import Image

    from projects.sa2va.evaluation.predictor import Sa2VAPredictor
    from tools.predict import main
    g, t = gold
    image = tmp_path / 'image.png'
    Image.fromarray(t['image'].numpy()).save(image)
    predictor = Sa2VAPredictor.from_hf(str(fixture_dir() / 'checkpoint'),
                                       config=str(exported['cfg']))
    assert predictor.settings['template'] == 'phi3_chat'
    batch = predictor._image_inputs(Image.open(image), g['question'])
    assert torch.equal(batch['input_ids'], t['gen_prompt_ids'])
    out = predictor.segment(Image.open(image), g['question'], max_new_tokens=8,
                            min_new_tokens=8)
    assert out['sequences'].tolist() == t['gen_ids'].tolist()
    assert out['text'] == g['predict_forward_prediction']
    rec = main(['--hf-dir', str(exported['dir']), '--image', str(image), '--text',
                g['question'], '--out', str(tmp_path / 'pred'), '--max-new-tokens', '4'])
    assert (tmp_path / 'pred' / 'answer.txt').read_text().strip() == rec['answer']
    assert json.loads((tmp_path / 'pred' / 'masks_rle.json').read_text())['answer'] == \
        rec['answer']


def test_export_refuses_a_template_without_official_name(exported, tmp_path):
    from tools.export import main
    with pytest.raises(ValueError, match="template 'vicuna' has no official Sa2VA name"):
        main([str(exported['ckpt']), '--config', str(exported['cfg']), '--out',
              str(tmp_path / 'x'), '--format', 'hf', '--template', 'vicuna'])
