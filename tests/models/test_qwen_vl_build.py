"""QwenVLChat construction: parameters in the target dtype, embedding rows
equal to the tokenizer's length (the official Sa2VA-Qwen resize rule)."""
from __future__ import annotations

import pytest
import torch

from projects.sa2va.models.qwen_vl import QWEN_VL_CLASSES


def _need(model_type):
    import transformers
    if not hasattr(transformers, QWEN_VL_CLASSES[model_type]):
        pytest.skip(f'{QWEN_VL_CLASSES[model_type]} is not in transformers '
                    f'{transformers.__version__} (Qwen-VL needs the current stack)')


@pytest.fixture(scope='module')
def qwen_tok(tmp_path_factory):
    from projects.sa2va.tokenization import add_special_tokens, build_tiny_tokenizer
    tok = build_tiny_tokenizer(tmp_path_factory.mktemp('qtok'), image_tokens='qwen_vl')
    add_special_tokens(tok)
    return tok


@pytest.mark.parametrize('model_type', ['qwen2_5_vl', 'qwen3_vl'])
def test_config_build_creates_parameters_in_the_target_dtype(model_type):
    """The ``pretrained_hf`` path builds a full-size model from its config: every
    parameter is created in bf16 (built in fp32 and cast, a 7B model peaks near
    30 GB); torch's default dtype is restored."""
    _need(model_type)
    from projects.sa2va.models.qwen_vl import QwenVLChat, tiny_qwen_vl_config

    from tests.models.build_helpers import created_parameter_dtypes
    model, seen = created_parameter_dtypes(lambda: QwenVLChat(
        config=tiny_qwen_vl_config(model_type, vocab_size=300), torch_dtype='bfloat16'))
    assert seen == {torch.bfloat16}, sorted(map(str, seen))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert torch.get_default_dtype() == torch.float32
    with pytest.raises(ValueError, match='unknown torch_dtype'):
        QwenVLChat(config=tiny_qwen_vl_config(model_type, vocab_size=300), torch_dtype='half')


@pytest.mark.parametrize('model_type', ['qwen2_5_vl', 'qwen3_vl'])
def test_embeddings_take_exactly_the_tokenizer_rows(model_type, qwen_tok):
    """Qwen checkpoints pad their vocabulary (151936 / 152064 rows for a
    151665-token tokenizer); the official Sa2VA-Qwen code calls
    ``resize_token_embeddings(len(tokenizer))`` after adding its 5 tokens, so
    the logits (and the loss's softmax) cover the tokenizer's ids only. A
    padded tiny model shrinks to ``len(tokenizer)`` keeping the first rows; a
    short one grows."""
    _need(model_type)
    from projects.sa2va.models.qwen_vl import QwenVLChat, tiny_qwen_vl_config
    n = len(qwen_tok)
    torch.manual_seed(0)
    padded = QwenVLChat(config=tiny_qwen_vl_config(model_type, vocab_size=n + 37))
    before = padded.get_input_embeddings().weight[:n].detach().clone()
    head = padded.get_output_embeddings().weight[:n].detach().clone()
    assert padded.prepare_for_tokenizer(qwen_tok) == []
    assert padded.get_input_embeddings().weight.shape[0] == n
    assert padded.get_output_embeddings().weight.shape[0] == n
    assert torch.equal(padded.get_input_embeddings().weight, before)
    assert torch.equal(padded.get_output_embeddings().weight, head)
    ids = torch.tensor([[qwen_tok.convert_tokens_to_ids('[SEG]'), 5, 6, 7]])
    out = padded(input_ids=ids, labels=ids)
    assert out.logits.shape == (1, 4, n)
    ref = torch.nn.functional.cross_entropy(out.logits[0, :-1], ids[0, 1:])
    torch.testing.assert_close(out.loss, ref)

    short = QwenVLChat(config=tiny_qwen_vl_config(model_type, vocab_size=n - 5))
    assert short.prepare_for_tokenizer(qwen_tok) == list(range(n - 5, n))
    assert short.get_input_embeddings().weight.shape[0] == n
