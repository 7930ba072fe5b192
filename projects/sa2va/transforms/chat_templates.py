"""Chat templates and BOS/EOS rules, as data (no xtuner needed).

Sa2VA v1 took both from xtuner 0.2.0 (``xtuner.utils.PROMPT_TEMPLATE`` and
``xtuner.dataset.utils.get_bos_eos_token_ids``). The entries below are those
xtuner entries, field for field, for every template the project's configs and
the newer InternVL backbones use; ``tests/transforms/test_chat_templates.py``
compares them with xtuner on the legacy environment.

Which template goes with which backbone:

* ``qwen_chat`` (ChatML): InternVL2.5-1B / 0.5B (Qwen2.5), InternVL3 (Qwen2.5)
  and InternVL3.5 (Qwen3) models, Sa2VA-1B; ``internvl2_5`` is its alias;
* ``internlm2_chat`` (ChatML with ``<|im_end|>`` as EOS): InternVL2.5-2B / 8B /
  26B (InternLM2.5), Sa2VA-8B / 26B;
* ``phi3_chat``: InternVL2.5-4B (Phi-3.5), Sa2VA-4B.

Template fields (xtuner's): ``SYSTEM`` (formatted with ``system``, prepended
to the first turn when a system prompt is set), ``INSTRUCTION`` (formatted
with ``input`` and ``round``), ``SUFFIX`` (appended to each answer),
``SUFFIX_AS_EOS`` (the suffix ends the answer: no EOS id after it, and no BOS
before the next turn), ``SEP`` (after each turn), ``STOP_WORDS``
(generation stops on them).
"""
from __future__ import annotations

from types import MappingProxyType
from typing import List, Optional, Tuple

from ..compat import tokenizer_class_name

__all__ = ['PROMPT_TEMPLATES', 'TEMPLATE_ALIASES', 'NO_BOS_TOKENIZERS',
           'FIXED_BOS_TOKEN_IDS', 'get_bos_eos_token_ids']

_CHATML_INSTRUCTION = ('<|im_start|>user\n{input}<|im_end|>\n'
                       '<|im_start|>assistant\n')
_CHATML_SYSTEM = '<|im_start|>system\n{system}<|im_end|>\n'

#: name -> template fields (read-only; ``get_template`` returns a copy).
PROMPT_TEMPLATES = MappingProxyType({
    'qwen_chat': MappingProxyType(dict(
        SYSTEM=_CHATML_SYSTEM,
        INSTRUCTION=_CHATML_INSTRUCTION,
        SUFFIX='<|im_end|>',
        SUFFIX_AS_EOS=True,
        SEP='\n',
        STOP_WORDS=('<|im_end|>', '<|endoftext|>'),
    )),
    'internlm2_chat': MappingProxyType(dict(
        SYSTEM=_CHATML_SYSTEM,
        INSTRUCTION=_CHATML_INSTRUCTION,
        SUFFIX='<|im_end|>',
        SUFFIX_AS_EOS=True,
        SEP='\n',
        STOP_WORDS=('<|im_end|>',),
    )),
    'phi3_chat': MappingProxyType(dict(
        SYSTEM='<|system|>\n{system}<|end|>\n',
        INSTRUCTION='<|user|>\n{input}<|end|>\n<|assistant|>\n',
        SUFFIX='<|end|>',
        SUFFIX_AS_EOS=True,
        SEP='\n',
        STOP_WORDS=('<|end|>',),
    )),
})

#: other names accepted for a template.
TEMPLATE_ALIASES = MappingProxyType({'internvl2_5': 'qwen_chat'})

#: tokenizer classes (transformers-4 names, see
#: :func:`projects.sa2va.compat.tokenizer_class_name`) that get no BOS id;
#: ``QWen2Tokenizer`` is spelled as in xtuner (a slow ``Qwen2Tokenizer`` is
#: not in xtuner's list and follows the generic rule).
NO_BOS_TOKENIZERS = frozenset({'QWenTokenizer', 'QWen2Tokenizer',
                               'Qwen2TokenizerFast'})

#: tokenizer classes with fixed BOS ids.
FIXED_BOS_TOKEN_IDS = MappingProxyType({'ChatGLMTokenizer': (64790, 64792)})


def get_bos_eos_token_ids(tokenizer
                          ) -> Tuple[Optional[List[int]], Optional[List[int]]]:
    """BOS and EOS ids put around each turn (xtuner's rule).

    Args:
        tokenizer: a transformers tokenizer.

    Returns:
        ``(bos_ids, eos_ids)``, each a list of ints or None when the
        tokenizer has no such token. Qwen tokenizers: no BOS (``[]``).

    Raises:
        ValueError: a Qwen tokenizer without an EOS token.
    """
    name = tokenizer_class_name(tokenizer)
    if name in NO_BOS_TOKENIZERS:
        bos = []
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError(f'{name} has no eos_token: set one for the '
                             f'Qwen tokenizer (Sa2VA uses <|endoftext|> / '
                             f'<|im_end|>)')
    elif name in FIXED_BOS_TOKEN_IDS:
        bos = list(FIXED_BOS_TOKEN_IDS[name])
        eos = tokenizer.eos_token_id
    else:
        bos = tokenizer.bos_token_id
        eos = tokenizer.eos_token_id
    if isinstance(bos, int):
        bos = [bos]
    if isinstance(eos, int):
        eos = [eos]
    return bos, eos
