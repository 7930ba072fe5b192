"""Sa2VA inference: segment, describe, chat and GCG on images and videos.

The inputs are made by the datasets' own registered transforms
(``DynamicTiles`` -> ``ImagesToTensor`` -> ``SAM2Input`` -> ``PoolPromptMasks``
/ ``AddVisualPromptText`` -> ``EncodeConversation`` -> ``PackInputs``), the
collate function and the model's data preprocessor, so a prompt is tokenised,
tiled and normalised exactly as in training.

Video: ``sampled_frames`` key frames are chosen by
:func:`projects.sa2va.transforms.video.sample_frame_indices` (the training
function; rule and seed configurable); the LLM reads the key frames; each
``[SEG]`` embedding prompts SAM2 on every key frame (conditioning frames,
computed without memory as in training), and SAM2's memory path
(``track_step``: memory attention over the memory bank of conditioning
frames and recent frames, object pointers) tracks the objects through the
other frames, forwards from the first key frame and backwards before it
(the order of SAM2's video predictor). The ``[SEG]`` embeddings come from
the generation (``Sa2VAModel.generate_masks_and_prompts``): no second LLM
pass.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import re
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..constants import IMAGE_PLACEHOLDER, SEG_TOKEN
from ..datasets.collate import sa2va_collate_fn
from ..models.sam2 import normalize_sam2_images
from ..transforms import video as video_tf
from ..transforms.formatting import (AddVisualPromptText, EncodeConversation,
                                     PackInputs)
from ..transforms.loading import DynamicTiles, ImagesToTensor, SAM2Input
from ..transforms.masks import PoolPromptMasks
from ..transforms.text import get_template

__all__ = ['Sa2VAPredictor', 'parse_gcg', 'load_frames', 'EXPORT_CONFIG']

#: file of an export directory holding the model build dict and the
#: predictor settings (``tools/export.py``).
EXPORT_CONFIG = 'sa2va_export.json'
EXPORT_WEIGHTS = 'model.safetensors'
EXPORT_TOKENIZER = 'tokenizer'
VIDEO_EXTS = ('.mp4', '.avi', '.mkv', '.mov', '.webm')

DEFAULT_GCG_QUESTION = ('Could you please give me a brief description of the '
                        'image? Please respond with interleaved segmentation '
                        'masks for the corresponding parts of the answer.')
DEFAULT_DESCRIBE_QUESTION = ('Please generate a detailed description for the '
                             'given image region.')

_GCG_RE = re.compile(r'<p>(.*?)</p>\s*' + re.escape(SEG_TOKEN), re.S)


def parse_gcg(text: str) -> List[str]:
    """Phrases of ``<p> phrase </p> [SEG]`` pairs in answer order (stripped).

    Raises:
        ValueError: the answer's ``[SEG]`` count differs from the pairs
        (a ``[SEG]`` without a phrase).
    """
    phrases = [p.strip() for p in _GCG_RE.findall(text)]
    if len(phrases) != text.count(SEG_TOKEN):
        raise ValueError(f'{text.count(SEG_TOKEN)} {SEG_TOKEN} in the answer '
                         f'but {len(phrases)} "<p> phrase </p> {SEG_TOKEN}" '
                         f'pairs: {text!r}')
    return phrases


def load_frames(path: Union[str, Sequence]) -> List[Image.Image]:
    """Frames of a video: a folder of images (sorted by name), a video file
    (OpenCV), or a list of paths / PIL images. Returns RGB PIL images."""
    if isinstance(path, (list, tuple)):
        return [p.convert('RGB') if isinstance(p, Image.Image)
                else Image.open(p).convert('RGB') for p in path]
    if osp.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.lower().endswith(
            ('.jpg', '.jpeg', '.png', '.bmp', '.webp')))
        if not names:
            raise ValueError(f'{path}: no image files')
        return [Image.open(osp.join(path, n)).convert('RGB') for n in names]
    n = video_tf.video_frame_count(path)
    return list(video_tf.read_video_frames(path, list(range(n))))


def _is_video(source) -> bool:
    """A list of frames, a frame folder or a video file (by extension)."""
    if isinstance(source, (list, tuple)):
        return True
    if isinstance(source, (str, os.PathLike)):
        source = os.fspath(source)
        return osp.isdir(source) or source.lower().endswith(VIDEO_EXTS)
    return False


def _as_image(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert('RGB')
    if isinstance(image, (str, os.PathLike)):
        return Image.open(image).convert('RGB')
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f'image must be a PIL image, a path or an (H, W, 3) '
                         f'uint8 array, got {array.shape} {array.dtype}')
    return Image.fromarray(array)


class Sa2VAPredictor:
    """Inference around a built :class:`~projects.sa2va.models.sa2va.Sa2VAModel`.

    Args:
        model: the model (moved to ``eval``; its device and dtypes are used).
        template: chat template (name or dict) of ``EncodeConversation``.
        max_length: prompt length limit of ``EncodeConversation``.
        system: system prompt ('' = none).
        max_num_tiles: ``DynamicTiles(max_num=...)`` for images.
        sampled_frames: key frames of a video the LLM reads.
        frame_rule: ``'segments'`` (default: spread over the video) or
            ``'random'``, see ``sample_frame_indices``.
        seed: seed of the key-frame generator (deterministic inference).
        prompt_pool: ``PoolPromptMasks`` mode of region prompts.
        pad_index: pad id of the collate function.
    """

    def __init__(self, model, template='internvl2_5', max_length: int = 8192,
                 system: str = '', max_num_tiles: int = 12,
                 sampled_frames: int = 5, frame_rule: str = 'segments',
                 seed: int = 0, prompt_pool: str = 'nearest',
                 pad_index: int = 0):
        self.model = model.eval()
        self.tokenizer = model.tokenizer
        self.settings = dict(template=template, max_length=max_length,
                             system=system, max_num_tiles=max_num_tiles,
                             sampled_frames=sampled_frames,
                             frame_rule=frame_rule, seed=seed,
                             prompt_pool=prompt_pool, pad_index=pad_index)
        self.sampled_frames = int(sampled_frames)
        self.frame_rule = frame_rule
        self.seed = seed
        self.pad_index = pad_index
        size = model.grounding_encoder.image_size
        self._tiles = DynamicTiles(max_num=max_num_tiles)
        self._to_tensor = ImagesToTensor()
        self._frames_to_tensor = ImagesToTensor(key='frames')
        self._sam2 = SAM2Input(size=size)
        self._sam2_frames = SAM2Input(key='frames', size=size)
        self._pool = PoolPromptMasks(mode=prompt_pool, ensure_nonempty=True)
        self._vp_text = AddVisualPromptText()
        self._collate = sa2va_collate_fn
        image_tokens = 'internvl'
        if type(model.mllm).__name__ == 'QwenVLChat':
            self._use_qwen_vl_steps(model.mllm.model_type)
            image_tokens = 'qwen_vl'
        self._encode = EncodeConversation(self.tokenizer, template, max_length, system,
                                          image_tokens=image_tokens)
        self._pack = PackInputs()
        self.stop_ids = self._stop_ids(template)

    def _use_qwen_vl_steps(self, backbone: str) -> None:
        """A Qwen-VL MLLM: one picture per image at the official Sa2VA-Qwen
        inference budget (512..2048 x 28 x 28 px, ``Sa2VAChatModelQwen``),
        key frames as image blocks at the training frame budget, prompts
        pooled on the merged grid, the Qwen-VL collate (``image_grid_thw``)."""
        from ..datasets.collate_qwen_vl import sa2va_qwen_vl_collate_fn
        from ..transforms.qwen_vl import QwenVLImageInput, QwenVLPoolPromptMasks
        from ..transforms.qwen_vl_video import QwenVLVideoInput
        self._tiles = None
        self._to_tensor = QwenVLImageInput(backbone, min_pixels=512 * 28 * 28,
                                           max_pixels=2048 * 28 * 28)
        self._frames_to_tensor = QwenVLVideoInput(backbone, video_mode='frames')
        self._pool = QwenVLPoolPromptMasks(backbone, mode=self._pool.mode,
                                           ensure_nonempty=True)
        self._collate = sa2va_qwen_vl_collate_fn

    # ------------------------------------------------------------ building
    @classmethod
    def from_config(cls, config, checkpoint: Optional[str] = None,
                    device: str = 'cpu', **overrides) -> 'Sa2VAPredictor':
        """Build the model of an mmengine config and load a checkpoint.

        Args:
            config: config path or ``mmengine.Config``; the text settings
                are read from its ``text_settings`` (or the train
                dataset's ``pipeline_defaults.EncodeConversation``), the
                tile limit from ``pipeline_overrides.DynamicTiles.max_num``.
            checkpoint: a training checkpoint (``.pth``, trainable-only or
                full, or ``.safetensors``) loaded with
                ``Sa2VAModel.load_pretrained``; None keeps the built weights.
                The model is built after seeding with ``randomness.seed``
                as the runner does, so weights neither in files nor in a
                trainable-only checkpoint match the training run's.
            device: torch device of the model.
            **overrides: predictor arguments (``template``, ``sampled_frames``
                ...) that win over the config.
        """
        from mmengine.config import Config
        from mmengine.registry import DefaultScope

        from ..registry import MODELS
        cfg = config if isinstance(config, Config) else Config.fromfile(config)
        settings = cls.settings_from_config(cfg)
        settings.update(overrides)
        model_cfg = cfg.model.copy()
        seed = (cfg.get('randomness') or {}).get('seed')
        if seed is not None:
            # the runner seeds before building: frozen weights that are not
            # loaded from files (tiny configs) come out the same as in
            # training, so a trainable-only checkpoint completes them
            from mmengine.runner import set_random_seed
            set_random_seed(seed, deterministic=cfg.randomness.get(
                'deterministic', False))
        with DefaultScope.overwrite_default_scope('sa2va'):
            model = MODELS.build(model_cfg)
        if checkpoint:
            model.load_pretrained(checkpoint)
        return cls(model.to(device), **settings)

    @staticmethod
    def settings_from_config(cfg) -> Dict[str, Any]:
        """Predictor settings a training config implies (see
        :meth:`from_config`)."""
        text = cfg.get('text_settings')
        dataset = cfg.get('train_dataloader', {}).get('dataset', {})
        if text is None:
            text = dataset.get('pipeline_defaults', {}).get('EncodeConversation')
        out: Dict[str, Any] = {}
        for key in ('template', 'max_length', 'system'):
            if text and key in text:
                value = text[key]
                out[key] = value.to_dict() if hasattr(value, 'to_dict') else value
        tiles = dataset.get('pipeline_overrides', {}).get('DynamicTiles', {})
        if 'max_num' in tiles:
            out['max_num_tiles'] = tiles['max_num']
        pad = cfg.get('train_dataloader', {}).get('collate_fn', {}).get('pad_index')
        if pad is not None:
            out['pad_index'] = pad
        return out

    @classmethod
    def from_export(cls, directory: str, device: str = 'cpu',
                    **overrides) -> 'Sa2VAPredictor':
        """Load an export directory written by ``tools/export.py`` (merged
        weights, no LoRA, its own tokenizer)."""
        model, settings = load_export(directory)
        settings.update(overrides)
        return cls(model.to(device), **settings)

    @classmethod
    def from_hf(cls, hf_dir: str, device: str = 'cpu', config=None,
                **overrides) -> 'Sa2VAPredictor':
        """Load a released Hugging Face Sa2VA directory (``ByteDance/Sa2VA-4B``
        or ``tools/export.py --format hf``): the model is built from its
        ``config.json`` (no LoRA) and its weights loaded tensor by tensor.

        Args:
            hf_dir: the directory.
            device: torch device of the model.
            config: optional training config (path or ``Config``): its SAM2
                build config and predictor settings are used (the official
                format has no SAM2 section; without a config, the one an
                export of this project recorded, else SAM2 hiera-L).
            **overrides: predictor arguments that win.

        The chat template is the directory's ``template`` (a config's only
        if given in ``overrides``); the tile limit its ``max_dynamic_patch``.
        """
        from mmengine.registry import DefaultScope

        from ..hf.convert import hf_model_cfg, read_export_template
        from ..hf.layout import read_hf_config
        from ..registry import MODELS
        sam2, settings = None, {}
        if config is not None:
            from mmengine.config import Config
            cfg = config if isinstance(config, Config) else Config.fromfile(config)
            sam2 = cfg.model.grounding_encoder.get('config')
            sam2 = sam2.to_dict() if hasattr(sam2, 'to_dict') else sam2
            settings = cls.settings_from_config(cfg)
        hf_cfg, _ = read_hf_config(hf_dir)
        settings['template'] = read_export_template(hf_dir)
        settings.setdefault('max_num_tiles', hf_cfg.get('max_dynamic_patch', 12))
        settings.update(overrides)
        with DefaultScope.overwrite_default_scope('sa2va'):
            model = MODELS.build(hf_model_cfg(hf_dir, sam2_config=sam2))
        return cls(model.to(device), **settings)

    def _stop_ids(self, template) -> List[int]:
        tok = self.tokenizer
        ids = set()
        if tok.eos_token_id is not None:
            ids.add(int(tok.eos_token_id))
        tpl = get_template(template)
        for word in list(tpl.get('STOP_WORDS') or []) + [tpl.get('SUFFIX') or '']:
            enc = tok.encode(word, add_special_tokens=False) if word.strip() else []
            if len(enc) == 1:
                ids.add(enc[0])
        return sorted(ids)

    # ------------------------------------------------------------- inputs
    def _prompt_batch(self, results: dict, steps: Sequence) -> dict:
        """Run the transforms, keep the prompt part of the ids, collate and
        pre-process. ``results['conversation']`` has one turn whose output
        is ''."""
        for step in steps:
            results = step(results)
        results = self._encode(results)
        sample = self._pack(results)
        labels = list(sample['labels'])
        supervised = [i for i, v in enumerate(labels) if v != -100]
        if not supervised:
            raise ValueError('the chat template puts nothing after an empty '
                             'answer; cannot find where the prompt ends')
        cut = supervised[0]
        sample['input_ids'] = list(sample['input_ids'])[:cut]
        sample['labels'] = [-100] * cut
        batch = self._collate([sample], pad_index=self.pad_index)
        return self.model.data_preprocessor(batch, False)

    def _image_inputs(self, image, text: str, masks=None) -> dict:
        image = _as_image(image)
        results = dict(image=image, ori_shape=(image.height, image.width))
        steps = [t for t in (self._tiles, self._to_tensor, self._sam2) if t is not None]
        if masks is not None:
            masks = np.asarray(masks)
            if masks.ndim == 2:
                masks = masks[None]
            if masks.shape[1:] != (image.height, image.width):
                raise ValueError(f'region masks {masks.shape[1:]} differ from '
                                 f'the image size {(image.height, image.width)}')
            if not masks.reshape(len(masks), -1).any(1).all():
                raise ValueError('a region mask is empty')
            results['masks'] = torch.from_numpy((masks != 0).astype(np.uint8))
            steps += [self._pool, self._vp_text]
        results['conversation'] = [dict(input=IMAGE_PLACEHOLDER + '\n' + text,
                                        output='')]
        return self._prompt_batch(results, steps)

    def key_frames(self, num_frames: int) -> List[int]:
        """Indices of the key frames of a ``num_frames`` video (sorted,
        distinct), by the training frame-sampling function."""
        rng = np.random.default_rng(self.seed)
        idx = video_tf.sample_frame_indices(num_frames, self.sampled_frames,
                                            rng, self.frame_rule)
        return sorted(set(idx))

    def _video_inputs(self, frames: Sequence[Image.Image], text: str,
                      keys: Sequence[int]) -> dict:
        key_frames = [frames[i] for i in keys]
        results = dict(frames=key_frames, num_frames=len(key_frames),
                       ori_shape=(key_frames[0].height, key_frames[0].width))
        # the video template of training (VideoReferringConversation):
        # the frame blocks directly followed by the question
        results['conversation'] = [dict(input=IMAGE_PLACEHOLDER + text,
                                        output='')]
        return self._prompt_batch(results, [self._frames_to_tensor,
                                            self._sam2_frames])

    # ---------------------------------------------------------- generation
    def _generate(self, batch: dict, max_new_tokens: int, do_sample: bool,
                  with_prompts: bool = False, **kwargs) -> dict:
        """``Sa2VAModel.generate_masks`` on a pre-processed one-sample batch
        (masks at ``self._ori_size``); ``with_prompts``: through
        ``generate_masks_and_prompts`` (adds ``seg_prompts (k, C)``)."""
        gen_kwargs = dict(max_new_tokens=max_new_tokens, do_sample=do_sample,
                          eos_token_id=self.stop_ids,
                          pad_token_id=self.pad_index, **kwargs)
        if not do_sample:
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        generate = (self.model.generate_masks_and_prompts if with_prompts
                    else self.model.generate_masks)
        out = generate(
            batch['input_ids'], batch.get('g_pixel_values'),
            ori_size=self._ori_size,
            pixel_values=batch.get('pixel_values'),
            image_flags=batch.get('image_flags'),
            vp_overall_mask=batch.get('vp_overall_mask'),
            prompt_masks=batch.get('prompt_masks') or None,
            **{k: batch[k] for k in ('image_grid_thw',) if k in batch}, **gen_kwargs)
        seq = out['sequences'].tolist()
        while seq and seq[-1] in self.stop_ids:
            seq = seq[:-1]
        out['text'] = self.tokenizer.decode(seq, skip_special_tokens=False)
        out['prompt_ids'] = batch['input_ids']
        return out

    def segment(self, image, text: str, max_new_tokens: int = 64,
                do_sample: bool = False, **gen_kwargs) -> Dict[str, Any]:
        """Answer ``text`` about an image and segment every ``[SEG]``.

        Args:
            image: PIL image, path, or ``(H, W, 3) uint8`` array.
            text: the question (e.g. ``Please segment the cat.``).
            max_new_tokens, do_sample, **gen_kwargs: generation (greedy by
                default; ``temperature``, ``top_p`` with sampling).

        Returns:
            dict: ``text`` (the answer, stop tokens removed), ``masks (k, H,
            W) bool`` (one per ``[SEG]``, at the image size), ``logits (k,
            h, w)`` low-res float, ``sequences`` (generated ids).
        """
        img = _as_image(image)
        self._ori_size = (img.height, img.width)
        out = self._generate(self._image_inputs(img, text), max_new_tokens,
                             do_sample, **gen_kwargs)
        return dict(text=out['text'], masks=out['pred_masks'][:, 0].cpu(),
                    logits=out['pred_logits'][:, 0].cpu(),
                    sequences=out['sequences'].cpu())

    def chat(self, image_or_frames, text: str, max_new_tokens: int = 256,
             do_sample: bool = False, **gen_kwargs) -> str:
        """The answer (text) about an image, or a video given as a list of
        frames / a folder / a video file (key frames only)."""
        if _is_video(image_or_frames):
            return self.segment_video(image_or_frames, text, max_new_tokens,
                                      do_sample, propagate=False,
                                      **gen_kwargs)['text']
        return self.segment(image_or_frames, text, max_new_tokens, do_sample,
                            **gen_kwargs)['text']

    def gcg(self, image, text: str = DEFAULT_GCG_QUESTION,
            max_new_tokens: int = 256, do_sample: bool = False,
            **gen_kwargs) -> Dict[str, Any]:
        """Grounded caption: ``text`` (the answer), ``phrases`` (list of k
        str) and ``masks (k, H, W) bool``, the i-th mask for the i-th
        ``<p> phrase </p> [SEG]`` pair."""
        out = self.segment(image, text, max_new_tokens, do_sample, **gen_kwargs)
        out['phrases'] = parse_gcg(out['text'])
        return out

    def describe(self, image, masks, text: str = DEFAULT_DESCRIBE_QUESTION,
                 max_new_tokens: int = 256, do_sample: bool = False,
                 **gen_kwargs) -> str:
        """Describe regions (visual prompt).

        Args:
            image: PIL image, path or array.
            masks: ``(H, W)`` or ``(n, H, W)`` region masks at the image
                size, non-zero = region (region1 .. regionN in order).
            text: the question about ``region1`` ...

        Returns:
            the answer (str).
        """
        img = _as_image(image)
        self._ori_size = (img.height, img.width)
        out = self._generate(self._image_inputs(img, text, masks),
                             max_new_tokens, do_sample, **gen_kwargs)
        return out['text']

    # --------------------------------------------------------------- video
    def segment_video(self, frames, text: str, max_new_tokens: int = 64,
                      do_sample: bool = False, propagate: bool = True,
                      **gen_kwargs) -> Dict[str, Any]:
        """Referring segmentation of a video.

        Args:
            frames: list of PIL images / paths, a frame folder or a video
                file (every frame is segmented).
            text: the question.
            propagate: track the key-frame prompts through all frames (the
                SAM2 memory path); False segments the key frames only.

        Returns:
            dict: ``text``, ``key_frames`` (indices), ``masks (k, N, H, W)
            bool`` for the N frames (``(k, K, H, W)`` for the K key frames
            without ``propagate``), ``key_masks (k, K, H, W) bool`` (the
            language-prompted masks of the key frames, as in training).
        """
        frames = load_frames(frames)
        sizes = {f.size for f in frames}
        if len(sizes) != 1:
            raise ValueError(f'video frames differ in size: {sorted(sizes)}')
        keys = self.key_frames(len(frames))
        self._ori_size = (frames[0].height, frames[0].width)
        batch = self._video_inputs(frames, text, keys)
        out = self._generate(batch, max_new_tokens, do_sample,
                             with_prompts=propagate, **gen_kwargs)
        result = dict(text=out['text'], key_frames=keys,
                      key_masks=out['pred_masks'].cpu(),
                      sequences=out['sequences'].cpu())
        if not propagate:
            result['masks'] = result['key_masks']
            return result
        k = out['pred_masks'].shape[0]
        if k == 0:
            result['masks'] = torch.zeros(0, len(frames), *self._ori_size,
                                          dtype=torch.bool)
            return result
        prompts = out['seg_prompts']
        all_frames = self._sam2_frames(dict(frames=frames))['g_pixel_values']
        logits = self.propagate(all_frames, prompts, keys)
        full = F.interpolate(logits.flatten(0, 1)[:, None].float(),
                             size=self._ori_size, mode='bilinear',
                             align_corners=False)[:, 0]
        result['masks'] = (full > 0).reshape(k, len(frames),
                                             *self._ori_size).cpu()
        result['logits'] = logits.cpu()
        return result

    @torch.no_grad()
    def propagate(self, frames: torch.Tensor, prompts: torch.Tensor,
                  keys: Sequence[int]) -> torch.Tensor:
        """Track k language-prompted objects through a video with SAM2.

        Args:
            frames: ``(N, 3, S, S)`` uint8 SAM2 frames (``SAM2Input``).
            prompts: ``(k, C)`` prompt embeddings of the answer's
                ``[SEG]`` (``Sa2VAModel.generate_masks_and_prompts``).
            keys: conditioning frame indices (distinct, sorted).

        Returns:
            ``(k, N, S/4, S/4)`` float low-res mask logits.
        """
        sam2 = self.model.grounding_encoder
        s = sam2.image_size
        if frames.ndim != 4 or tuple(frames.shape[1:]) != (3, s, s):
            raise ValueError(f'frames must be (N, 3, {s}, {s}) uint8 '
                             f'(SAM2Input), got {tuple(frames.shape)}')
        dtype = next(sam2.image_encoder.parameters()).dtype
        images = normalize_sam2_images(frames.to(prompts.device), dtype)
        n, k = images.shape[0], prompts.shape[0]
        embd = prompts[:, None].to(sam2.no_mem_embed.dtype)
        bank = {'cond_frame_outputs': {}, 'non_cond_frame_outputs': {}}

        def features(t):
            out = sam2.forward_image(images[t:t + 1])
            out = dict(out,
                       backbone_fpn=[x.expand(k, -1, -1, -1) for x in out['backbone_fpn']],
                       vision_pos_enc=[x.expand(k, -1, -1, -1)
                                       for x in out['vision_pos_enc']])
            return sam2.prepare_backbone_features(out)

        def step(t, cond, reverse=False):
            feats, pos, sizes = features(t)
            out = sam2.track_step(t, cond, feats, pos, sizes, point_inputs=None,
                                  mask_inputs=None, output_dict=bank,
                                  num_frames=n, track_in_reverse=reverse,
                                  language_embd=embd if cond else None)
            bank['cond_frame_outputs' if cond else 'non_cond_frame_outputs'][t] = out
            return out['pred_masks'][:, 0]

        logits: Dict[int, torch.Tensor] = {}
        keys = sorted(set(int(t) for t in keys))
        for t in keys:
            logits[t] = step(t, True)
        for t in range(keys[0] + 1, n):
            if t not in logits:
                logits[t] = step(t, False)
        for t in range(keys[0] - 1, -1, -1):
            logits[t] = step(t, False, reverse=True)
        return torch.stack([logits[t] for t in range(n)], dim=1).float()


# ---------------------------------------------------------------------------
# Export directories
# ---------------------------------------------------------------------------
def load_export(directory: str):
    """Build the merged model of an export directory.

    Returns:
        ``(model, predictor_settings)``.
    """
    from mmengine.registry import DefaultScope
    from safetensors.torch import load_file

    from ..registry import MODELS
    path = osp.join(directory, EXPORT_CONFIG)
    if not osp.isfile(path):
        raise FileNotFoundError(f'{directory} is not a Sa2VA export directory '
                                f'(no {EXPORT_CONFIG})')
    with open(path, encoding='utf-8') as f:
        meta = json.load(f)
    # untrusted file: registered types only, the tokenizer's code never runs
    from ..engine.checkpoint import check_build_cfg
    from ..tokenization import load_tokenizer
    check_build_cfg(meta['model'], path, MODELS)
    model_cfg = dict(meta['model'], tokenizer=dict(
        type=load_tokenizer, path=osp.join(directory, EXPORT_TOKENIZER),
        trust_remote_code=False))
    with DefaultScope.overwrite_default_scope('sa2va'):
        model = MODELS.build(model_cfg)
    state = load_file(osp.join(directory, EXPORT_WEIGHTS))
    own = model.state_dict(trainable_only=False)
    tied = model.mllm.get_output_embeddings()
    tied = tied is not None and tied.weight is model.mllm.get_input_embeddings().weight
    missing = sorted(set(own) - set(state)
                     - ({'mllm.language_model.lm_head.weight'} if tied else set()))
    unknown = sorted(set(state) - set(own))
    if missing or unknown:
        raise ValueError(f'{directory}/{EXPORT_WEIGHTS} does not match the '
                         f'exported config: missing {missing[:10]}, unknown '
                         f'{unknown[:10]}')
    model.load_state_dict(state, strict=False)
    return model, dict(meta.get('predictor', {}))
