"""Text transforms (visual-prompt text, conversation encoding) and packing."""
from __future__ import annotations

from ..constants import IMAGE_PLACEHOLDER
from ..constants import image_tokens as image_token_strings
from ..registry import TRANSFORMS
from .base import BaseTransform, RecordError, bump, require
from .functional import visual_prompt_text
from .text import (ConversationEncoder, SampleRejected, image_block,
                   video_block)


def build_tokenizer(tokenizer):
    """A tokenizer from a config value, with Sa2VA's tokens added.

    Args:
        tokenizer: a tokenizer object, a directory path (str), or a dict
            ``dict(type=callable, **kwargs)`` as in xtuner configs
            (``type=AutoTokenizer.from_pretrained``).
    """
    from ..tokenization import add_special_tokens, load_tokenizer
    if isinstance(tokenizer, str):
        tokenizer = load_tokenizer(tokenizer)
    elif isinstance(tokenizer, dict):
        cfg = dict(tokenizer)
        factory = cfg.pop('type')
        if isinstance(factory, str):
            raise TypeError('tokenizer dict needs a callable type, e.g. '
                            'AutoTokenizer.from_pretrained')
        tokenizer = factory(**cfg)
    add_special_tokens(tokenizer)
    return tokenizer


@TRANSFORMS.register_module()
class AddVisualPromptText(BaseTransform):
    """Prepend Sa2VA's region prompt to the first question.

    The first input becomes ``<image>\\n`` + ``There are N part regions in
    the picture: region1<vp>...</vp>, ... .\\n`` + the question (a leading
    ``<image>`` and the newline after it are moved to the front, as Sa2VA
    does). Context runs are compact markers, expanded to ids by
    :class:`EncodeConversation`.

    Required Keys: ``conversation`` (list of ``{'input', 'output'}``),
    ``region_token_counts`` (list of ints).

    Modified Keys: ``conversation``.
    """

    def transform(self, results: dict) -> dict:
        conv, counts = require(results, 'conversation', 'region_token_counts',
                               where='AddVisualPromptText')
        if not conv:
            raise RecordError('no_turns', 'conversation is empty')
        first = conv[0]['input']
        if IMAGE_PLACEHOLDER + '\n' in first:
            first = first.replace(IMAGE_PLACEHOLDER + '\n', '', 1)
        first = first.replace(IMAGE_PLACEHOLDER, '')
        conv = [dict(t) for t in conv]
        conv[0]['input'] = (IMAGE_PLACEHOLDER + '\n'
                            + visual_prompt_text(counts, compact=True) + first)
        results['conversation'] = conv
        return results


@TRANSFORMS.register_module()
class EncodeConversation(BaseTransform):
    """Conversation -> ``input_ids`` / ``labels`` with image blocks as ids.

    ``<image>`` in the conversation is replaced by the sample's image block:
    ``<img>`` + 256 x ``num_tiles`` ``<IMG_CONTEXT>`` + ``</img>`` for an
    image, one such block per frame joined by ``\\n`` for a video
    (``num_frames`` in the results). Qwen-VL: ``num_image_tokens`` (an
    image, :class:`~projects.sa2va.transforms.qwen_vl.QwenVLImageInput`)
    gives one block of that many context tokens, ``num_frame_tokens`` one
    such block per frame ('\\n'-joined), ``video_token_text`` (native video,
    :class:`~projects.sa2va.transforms.qwen_vl_video.QwenVLVideoInput`) is
    used as it is. The block's strings are the backbone's
    (``image_tokens``). Whole trailing turns that do not fit
    ``max_length`` are dropped (counted as ``turns_dropped``); a sample whose
    first turn does not fit is rejected (``too_long``).

    Args:
        tokenizer: see :func:`build_tokenizer`.
        template: chat template name or dict (``get_template``).
        max_length: ids per sample.
        system: system prompt ('' = none).
        tokens_per_tile: ``<IMG_CONTEXT>`` per tile / frame (256).
        image_tokens: ``'internvl'`` (default) or ``'qwen_vl'``
            (:data:`~projects.sa2va.constants.IMAGE_TOKENS`): the strings of
            image and ``<vp>`` blocks and the context token of their runs.

    Required Keys: ``conversation``; one of the counts above when the text
    has ``<image>``.

    Added Keys: ``input_ids`` (list of int), ``labels`` (list of int, -100
    outside answers).
    """

    def __init__(self, tokenizer, template='internvl2_5',
                 max_length: int = 8192, system: str = '',
                 tokens_per_tile: int = 256, image_tokens: str = 'internvl'):
        self.tokenizer_cfg = tokenizer
        self.template = template
        self.max_length = max_length
        self.system = system
        self.tokens_per_tile = tokens_per_tile
        self.image_tokens = image_tokens
        image_token_strings(image_tokens)  # an unknown name fails here
        self._encoder = None

    @property
    def encoder(self) -> ConversationEncoder:
        # Built lazily: config dicts stay picklable and each worker builds
        # its tokenizer once.
        if self._encoder is None:
            self._encoder = ConversationEncoder(
                build_tokenizer(self.tokenizer_cfg), self.template,
                self.max_length, self.system, self.image_tokens)
        return self._encoder

    def image_text(self, results: dict) -> str:
        """The image block(s) that replace ``<image>``."""
        names = self.image_tokens
        if 'video_token_text' in results:  # Qwen-VL native video
            return results['video_token_text']
        if 'num_frame_tokens' in results:  # Qwen-VL frames as images
            return video_block(results['num_frames'],
                               results['num_frame_tokens'],
                               image_tokens=names)
        if 'num_image_tokens' in results:  # one Qwen-VL image
            return image_block(1, results['num_image_tokens'], names)
        if 'num_frames' in results:
            return video_block(results['num_frames'], self.tokens_per_tile,
                               image_tokens=names)
        if 'num_tiles' in results:
            return image_block(results['num_tiles'], self.tokens_per_tile,
                               names)
        raise KeyError('EncodeConversation: the text has <image> but the '
                       'results have neither num_tiles, num_frames nor '
                       'num_image_tokens')

    def transform(self, results: dict) -> dict:
        conv, = require(results, 'conversation', where='EncodeConversation')
        n_placeholders = sum(t['input'].count(IMAGE_PLACEHOLDER) +
                             (t.get('output') or '').count(IMAGE_PLACEHOLDER)
                             for t in conv)
        if n_placeholders > 1:
            raise RecordError('bad_text', f'conversation has '
                              f'{n_placeholders} <image> placeholders; one '
                              f'image block per sample is supported')
        if n_placeholders == 1:
            block = self.image_text(results)
            conv = [dict(input=t['input'].replace(IMAGE_PLACEHOLDER, block),
                         output=t.get('output') or '') for t in conv]
        try:
            enc = self.encoder.encode(conv)
        except SampleRejected as exc:
            raise RecordError(exc.reason, str(exc)) from None
        bump(results, 'turns_dropped', enc['num_turns_dropped'])
        results['input_ids'] = enc['input_ids']
        results['labels'] = enc['labels']
        return results


@TRANSFORMS.register_module()
class PackInputs(BaseTransform):
    """Keep only what the collate function needs (no PIL images leave the
    worker).

    Args:
        keys: keys to keep when present. Default: the model inputs of every
            family.
        meta_keys: small metadata kept under ``meta``.

    Modified Keys: everything; the result holds ``keys`` present,
    ``data_stats`` and ``meta``.
    """

    DEFAULT_KEYS = ('input_ids', 'labels', 'pixel_values', 'g_pixel_values',
                    'masks', 'prompt_masks', 'vp_overall_mask',
                    'option_a_image', 'option_a_mask', 'image_grid_thw',
                    'pixel_values_videos', 'video_grid_thw',
                    'second_per_grid_ts')

    def __init__(self, keys=DEFAULT_KEYS,
                 meta_keys=('img_path', 'sample_idx', 'ori_shape',
                            'dataset_name')):
        self.keys = tuple(keys)
        self.meta_keys = tuple(meta_keys)

    def transform(self, results: dict) -> dict:
        out = {k: results[k] for k in self.keys if k in results}
        out['data_stats'] = dict(results.get('data_stats', {}))
        out['meta'] = {k: results[k] for k in self.meta_keys if k in results}
        if 'input_ids' in out:
            bump(out, 'samples')
        return out
