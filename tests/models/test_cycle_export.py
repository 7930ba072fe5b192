"""Export of a cycle-trained student: a plain Sa2VAModel without the EMA
teacher, special-token rows of embed_tokens / lm_head kept."""
from __future__ import annotations

import inspect
from pathlib import Path

import torch

CONFIG = Path(__file__).resolve().parents[2] / 'configs/_base_/models/mask_caption_cycle_tiny.py'


def test_cycle_keys_are_the_constructor_keys():
    from projects.sa2va.models.cycle import MaskCaptionCycleModel
    own = set(inspect.signature(MaskCaptionCycleModel.__init__).parameters)
    own -= {'self', 'args', 'kwargs', 'data_preprocessor'}
    assert own == set(MaskCaptionCycleModel.CYCLE_KEYS)


def test_export_is_a_plain_sa2va_with_special_rows(tiny_tokenizer_dir, tmp_path):
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope

    from projects.sa2va.evaluation.export import export_model
    from projects.sa2va.evaluation.predictor import load_export
    from projects.sa2va.models.cycle import MaskCaptionCycleModel
    cfg = Config.fromfile(str(CONFIG))
    cfg.model.tokenizer = str(tiny_tokenizer_dir)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('sa2va'):
        model = MODELS.build(cfg.model)
    model.ema_reset()
    special = model.special_ids.clone()
    assert model.seg_token_id in special.tolist()
    rows_in = model.mllm.get_input_embeddings().weight[special].detach().clone()
    rows_out = model.mllm.get_output_embeddings().weight[special].detach().clone()
    # the training checkpoint keeps the teacher ...
    assert any(k.startswith('ema_shadow.') for k in model.state_dict())
    out_cfg = MaskCaptionCycleModel.export_model_cfg(cfg.model)
    assert out_cfg['type'] == 'Sa2VAModel' and 'caption_len' not in out_cfg
    assert out_cfg['data_preprocessor']['type'] == 'Sa2VADataPreprocessor'
    # ... the export does not
    state = export_model(model, out_cfg, str(tmp_path / 'export'))
    assert state == str(tmp_path / 'export')
    from safetensors.torch import load_file
    saved = load_file(str(tmp_path / 'export' / 'model.safetensors'))
    assert saved and not any(k.startswith('ema_') for k in saved)
    loaded, _ = load_export(str(tmp_path / 'export'))
    assert type(loaded).__name__ == 'Sa2VAModel'
    assert loaded.seg_token_id == model.seg_token_id
    assert torch.equal(loaded.mllm.get_input_embeddings().weight[special], rows_in)
    assert torch.equal(loaded.mllm.get_output_embeddings().weight[special], rows_out)
    assert any(k.startswith('ema_shadow.') for k in model.state_dict())   # flag reset


def test_export_from_the_cycle_config_command_path(sample_cwd, monkeypatch,
                                                   tmp_path):
    """tools/export.py's path (export_from_config) on a cycle config writes a
    plain Sa2VAModel export (it used to fail on the EMA keys)."""
    import json

    from projects.sa2va.evaluation.export import export_from_config
    monkeypatch.chdir(sample_cwd)
    config = str(Path(__file__).resolve().parents[2] / 'configs'
                 / 'mask_caption_cycle_tiny.py')
    out = export_from_config(config, None, str(tmp_path / 'export'))
    files = {p.name for p in Path(out).iterdir()}
    assert {'model.safetensors', 'sa2va_export.json', 'tokenizer'} <= files
    meta = json.loads((Path(out) / 'sa2va_export.json').read_text())
    assert meta['model']['type'] == 'Sa2VAModel'
    assert not {'ema_decay', 'caption_len'} & set(meta['model'])
