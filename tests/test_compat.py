"""projects/sa2va/compat.py: the version look-ups and the keyword choices
read from the installed libraries."""
from __future__ import annotations

from projects.sa2va import compat


def test_versions_are_parsed_and_compared():
    assert compat._parse('2.14.1+cu130') == (2, 14, 1)
    assert compat._parse('5.0.0rc1') == (5, 0, 0)
    assert compat._parse('0.10') == (0, 10)
    assert compat.version_at_least('torch', '2.5')
    assert not compat.version_at_least('torch', '999')
    assert compat.package_version('no-such-distribution-here') is None
    assert not compat.version_at_least('no-such-distribution-here', '0')


def test_cache_kwargs_follow_the_forward_signature():
    class NewStyle:
        def forward(self, inputs_embeds=None, cache=None, use_cache=None):
            pass

    class OldStyle:   # transformers 4.x classes, remote code (InternLM2)
        def forward(self, inputs_embeds=None, past_key_values=None):
            pass

    class PeftLike:   # a wrapper whose forward takes **kwargs
        def __init__(self, base):
            self.base = base

        def get_base_model(self):
            return self.base

        def forward(self, *args, **kwargs):
            pass

    cache = object()
    assert compat.cache_kwargs(NewStyle(), cache) == {'cache': cache}
    assert compat.cache_kwargs(OldStyle(), cache) == {'past_key_values': cache}
    assert compat.cache_kwargs(PeftLike(OldStyle()), cache) == {'past_key_values': cache}
    assert compat.cache_kwargs(NewStyle(), None) == {}


def test_installed_llm_classes_take_the_chosen_cache_keyword():
    import inspect

    from transformers import Qwen2ForCausalLM
    key = compat._cache_kwarg_of(Qwen2ForCausalLM)
    assert key in inspect.signature(Qwen2ForCausalLM.forward).parameters


def test_dtype_keyword_is_the_one_the_installed_transformers_reads():
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    assert compat.dtype_kwargs(None) == {}
    (key, value), = compat.dtype_kwargs(torch.bfloat16).items()
    assert value is torch.bfloat16
    cfg = Qwen2Config(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1)
    model = Qwen2ForCausalLM._from_config(cfg, **{key: torch.bfloat16})
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
