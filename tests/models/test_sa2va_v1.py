"""Sa2VA v1 training checkpoints and v1's embedding recipe.

A v1 ``.pth`` is what its ``VideoLLaVASAMModel.state_dict`` keeps (Sa2VA
``projects/llava_sam2/models/llava_sam2.py`` with xtuner's
``get_peft_model_state_dict``, which filters ``lora_`` keys and keeps the
adapter name): the LoRA keys of ``mllm.model.language_model`` (peft
``base_model.model.`` inside), ``mllm.model.mlp1.*``, every key containing
``mask_decoder`` (``grounding_encoder.sam2_model.sam_mask_decoder.*``),
``text_hidden_fcs.*``, and the whole ``embed_tokens.weight`` and
``lm_head.weight`` (v1 sets ``requires_grad_(True)`` on both)."""
from __future__ import annotations

import pytest
import torch

from test_sa2va import build_tiny, collate, family_samples, run_loss

LLM = 'mllm.model.language_model.base_model.model.'


def v1_state(model, gen):
    """A v1 checkpoint of the tiny model, spelled with v1's key names; random
    values so that every loaded tensor is checkable."""
    own = model.state_dict(trainable_only=False)
    state = {}
    for key, value in own.items():
        if '.lora_A.' in key or '.lora_B.' in key:
            state[key.replace('mllm.', 'mllm.model.', 1)] = value
        elif key.startswith('mllm.mlp1.'):
            state[key.replace('mllm.', 'mllm.model.', 1)] = value
        elif key.startswith('grounding_encoder.sam_mask_decoder.'):
            state[key.replace('grounding_encoder.', 'grounding_encoder.sam2_model.', 1)] = value
        elif key.startswith('text_hidden_fcs.'):
            state[key] = value
    vocab, dim = model.mllm.get_input_embeddings().weight.shape
    state[LLM + 'model.embed_tokens.weight'] = torch.zeros(vocab, dim)
    state[LLM + 'lm_head.weight'] = torch.zeros(vocab, dim)
    return {k: torch.randn(v.shape, generator=gen) for k, v in state.items()}


@pytest.fixture(scope='module')
def tok_dir(tmp_path_factory):
    from projects.sa2va.tokenization import build_tiny_tokenizer
    path = tmp_path_factory.mktemp('v1_tok')
    build_tiny_tokenizer(path)
    return path


@pytest.mark.parametrize('adapter_name', ['.default', ''])
def test_v1_checkpoint_loads_whole_embeddings_into_base_and_rows(tok_dir, tmp_path,
                                                                 adapter_name):
    model = build_tiny(tok_dir)
    state = v1_state(model, torch.Generator().manual_seed(5))
    # v1's real names (xtuner keeps the adapter name; a peft-saved file drops it)
    for key in (LLM + 'model.embed_tokens.weight', LLM + 'lm_head.weight',
                LLM + 'model.layers.0.self_attn.q_proj.lora_A.default.weight',
                'mllm.model.mlp1.1.weight',
                'grounding_encoder.sam2_model.sam_mask_decoder.iou_prediction_head.layers.0.weight',
                'text_hidden_fcs.0.weight'):
        assert key in state, key
    state = {k.replace('.default.', adapter_name + '.'): v for k, v in state.items()}
    torch.save({'meta': {}, 'state_dict': state}, tmp_path / 'iter_v1.pth')
    loaded = build_tiny(tok_dir, pretrained_pth=str(tmp_path / 'iter_v1.pth'))
    emb_v1 = state[LLM + 'model.embed_tokens.weight']
    emb = loaded.mllm.get_input_embeddings()
    ids = torch.arange(emb_v1.shape[0])[None]
    # the base matrix and the trainable [SEG] ... rows together give v1's rows
    with torch.no_grad():
        assert torch.equal(emb(ids)[0], emb_v1)
    assert torch.equal(emb.token_adapter.base_layer.weight.detach(), emb_v1)
    rows = emb.token_adapter.token_indices['default']
    assert rows == list(range(1024, 1029))
    assert torch.equal(emb.token_adapter.trainable_tokens_delta['default'].detach(),
                       emb_v1[rows])
    assert torch.equal(loaded.mllm.get_output_embeddings().weight.detach(),
                       state[LLM + 'lm_head.weight'])
    own = loaded.state_dict(trainable_only=False)
    q = 'mllm.language_model.base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight'
    assert torch.equal(own[q], state[q.replace('mllm.', 'mllm.model.', 1)
                                     .replace('.default.', adapter_name + '.')])
    head = 'grounding_encoder.sam_mask_decoder.iou_prediction_head.layers.0.weight'
    assert torch.equal(own[head], state[head.replace('grounding_encoder.',
                                                     'grounding_encoder.sam2_model.')])


def test_v1_checkpoint_loads_into_the_v1_recipe(tok_dir, tmp_path):
    model = build_tiny(tok_dir)
    state = v1_state(model, torch.Generator().manual_seed(6))
    torch.save({'state_dict': state}, tmp_path / 'iter_v1.pth')
    v1 = build_tiny(tok_dir, train_embeddings='all', pretrained_pth=str(tmp_path / 'iter_v1.pth'))
    assert torch.equal(v1.mllm.get_input_embeddings().weight.detach(),
                       state[LLM + 'model.embed_tokens.weight'])


def test_all_embeddings_train_every_touched_row(tok_dir):
    """train_embeddings='all' (v1): the whole embedding and lm_head require
    grad; after one loss the gradient reaches every embedding row the batch
    reads (not the <IMG_CONTEXT> rows, replaced by vision features) and no
    other row, and every lm_head row (softmax)."""
    model = build_tiny(tok_dir, train_embeddings='all').train()
    emb = model.mllm.get_input_embeddings()
    head = model.mllm.get_output_embeddings()
    assert not hasattr(emb, 'token_adapter') and emb.weight.requires_grad
    assert head.weight.requires_grad
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert 'mllm.language_model.base_model.model.model.embed_tokens.weight' in names
    assert set(model.state_dict()) == names  # the run checkpoint holds them whole
    samples = family_samples(model.tokenizer)
    chosen = [samples[k] for k in ('res', 'vqa', 'text', 'gcg')]
    model.parse_losses(run_loss(model, collate(chosen)))[0].backward()
    ctx = model.tokenizer.convert_tokens_to_ids('<IMG_CONTEXT>')
    # the samples' own ids (padding is attended by nothing)
    touched = {int(i) for s in chosen for i in s['input_ids']} - {ctx}
    grad_rows = set(torch.nonzero(emb.weight.grad.abs().sum(1)).flatten().tolist())
    assert grad_rows == touched
    assert bool((head.weight.grad.abs().sum(1) > 0).all())


def test_all_embeddings_option_is_checked(tok_dir):
    with pytest.raises(ValueError, match="train_embeddings must be one of"):
        build_tiny(tok_dir, train_embeddings='rows')
    with pytest.raises(ValueError, match="cannot go with train_lm_head=False"):
        build_tiny(tok_dir, train_embeddings='all', train_lm_head=False)
