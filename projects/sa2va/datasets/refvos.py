"""Family 3, referring segmentation on video: MeViS, ReVOS, Ref-YouTube-VOS
and the SA-V pseudo-referring data (``docs/datasets.md``).

One dataset item is one **video** (``len`` = number of videos, as Sa2VA).
The dataset classes only parse the annotation index; a pipeline of
registered transforms makes the sample::

    SampleVideoObjects(select_number=5)      # 5 expressions, with replacement
    SampleVideoFrames(sampled_frames=5)      # Sa2VA's 'random' frame rule
    LoadFrames | LoadVideoFrames(frame_stride=4, check_frame_count=True)
    DecodeVideoMasks                          # masks (n_obj * T, H, W), object-major
    VideoReferringConversation                # '<image>' + question, [SEG] answers
    ImagesToTensor(key='frames')              # pixel_values (T, 3, 448, 448) uint8
    SAM2Input(key='frames')                   # g_pixel_values (T, 3, 1024, 1024) uint8
    EncodeConversation                        # one <img>..</img> block per frame
    PackInputs

(``configs/_base_/datasets/refvos.py`` writes these out.) The SA-V pipeline
starts with :class:`LoadSAVAnnotation`, which reads the SA-V masklet file of
the record. Random choices use ``results['rng']`` in pipeline order:
objects, frames, then per object the question template and the answer
(``'short_caption'``: first the caption of every object).

Text (Sa2VA v1, token for token): the first question is preceded by the
frame blocks (``<img>`` + 256 ``<IMG_CONTEXT>`` + ``</img>`` per frame,
joined by ``\\n``) with **no** separator before the question (v2 puts a
``\\n`` there: ``frame_newline=True``).
"""
from __future__ import annotations

import json
import math
import os.path as osp
from typing import Sequence

import numpy as np
from mmengine.logging import print_log

from ..constants import IMAGE_PLACEHOLDER, NUM_IMAGE_TOKENS
from ..registry import DATASETS, TRANSFORMS
from ..transforms.base import BaseTransform, RecordError, require
from ..transforms import video as _video  # noqa: F401  (registers transforms)
from .base import (Sa2VABaseDataset, estimate_text_tokens,
                   first_text_defect, load_json)
from .safe_pickle import load_data_pickle

# Question templates and answers of Sa2VA v1
# (magic-research/Sa2VA projects/llava_sam2/datasets/ReVOS_Dataset.py,
# SEG_QUESTIONS / ANSWER_LIST; ReSAM2_Dataset.py uses the same 16 as
# SEG_QUESTIONS_SHORT). Data, reproduced exactly for token equality.
SEG_QUESTIONS = (
    'Can you segment the {class_name} in this image?',
    'Please segment {class_name} in this image.',
    'What is {class_name} in this image? Please respond with segmentation '
    'mask.',
    'What is {class_name} in this image? Please output segmentation mask.',
    'Can you segment the {class_name} in this image',
    'Please segment {class_name} in this image',
    'What is {class_name} in this image? Please respond with segmentation '
    'mask',
    'What is {class_name} in this image? Please output segmentation mask',
    'Could you provide a segmentation mask for the {class_name} in this '
    'image?',
    'Please identify and segment the {class_name} in this image.',
    'Where is the {class_name} in this picture? Please respond with a '
    'segmentation mask.',
    'Can you highlight the {class_name} in this image with a segmentation '
    'mask?',
    'Could you provide a segmentation mask for the {class_name} in this '
    'image',
    'Please identify and segment the {class_name} in this image',
    'Where is the {class_name} in this picture? Please respond with a '
    'segmentation mask',
    'Can you highlight the {class_name} in this image with a segmentation '
    'mask',
)
ANSWER_LIST = (
    'It is [SEG].',
    'Sure, [SEG].',
    'Sure, it is [SEG].',
    'Sure, the segmentation result is [SEG].',
    '[SEG].',
)
# SA-V pseudo-referring, 'long' mode (ReSAM2_Dataset.py, SEG_QUESTIONS).
SAV_DESCRIPTION_QUESTIONS = (
    'Please segment the object according to the description: {class_name}',
)

QUESTION_RULES = ('expression', 'description', 'short_caption',
                  'description_or_short')


def expression_question(exp: str, template: str) -> str:
    """Sa2VA's referring-expression question: an expression containing
    ``?`` is the question itself; otherwise every ``.`` is removed, the text
    stripped and lower-cased and put into ``template``'s ``{class_name}``."""
    if '?' in exp:
        return exp
    return template.format(class_name=exp.replace('.', '').strip().lower())


@TRANSFORMS.register_module()
class VideoReferringConversation(BaseTransform):
    """Questions and ``[SEG]`` answers for the sampled objects (Sa2VA v1).

    Rules (``question_rule``):

    * ``'expression'`` (MeViS, ReVOS, Ref-YouTube-VOS):
      :func:`expression_question` with a random template of
      :data:`SEG_QUESTIONS`;
    * ``'description'`` (SA-V, v1 ``mode='long'``, the default there):
      ``Please segment the object according to the description: {exp}`` with
      the caption verbatim;
    * ``'short_caption'`` (v1 ``mode='short'``): a random caption of the
      object's ``short_caps``, every ``'A '`` removed, in a random template
      of :data:`SEG_QUESTIONS`;
    * ``'description_or_short'`` (v1 ``'long_short'``): per sample, one of
      the two above with probability 1/2 each.

    Answers: a random entry of :data:`ANSWER_LIST` (one ``[SEG]`` each).
    The first input is ``<image>`` + question (``frame_newline``: ``<image>\\n``
    + question); :class:`EncodeConversation` writes the frame blocks there.

    Args:
        question_rule: see above.
        frame_newline: put ``\\n`` between the frame blocks and the first
            question (Sa2VA v2); v1 (default) puts nothing.

    Required Keys: ``objects`` (list of dicts with ``exp`` (str), and
    ``short_caps`` (list of str) for the short rules), ``rng``.

    Added Keys: ``conversation`` (list of ``{'input', 'output'}``, one pair
    per object, in object order).

    Raises:
        RecordError: ``'no_objects'``; ``'bad_text'`` (no short caption);
        ``'empty_text'`` (an expression or caption that is empty once
        ``.`` and ``?`` are removed, as RefCOCO rejects an empty phrase).
    """

    def __init__(self, question_rule: str = 'expression',
                 frame_newline: bool = False):
        if question_rule not in QUESTION_RULES:
            raise ValueError(f'unknown question_rule {question_rule!r}; '
                             f'choose from {QUESTION_RULES}')
        self.question_rule = question_rule
        self.frame_newline = frame_newline

    def transform(self, results: dict) -> dict:
        objects, rng = require(results, 'objects', 'rng',
                               where='VideoReferringConversation')
        if not objects:
            raise RecordError('no_objects', 'no objects to ask about')
        rule = self.question_rule
        if rule == 'description_or_short':
            rule = 'description' if rng.random() < 0.5 else 'short_caption'
        if rule == 'short_caption':
            texts = []
            for i, obj in enumerate(objects):
                caps = obj.get('short_caps') or []
                if not caps:
                    raise RecordError('bad_text', f'object {i} has no '
                                      f'short captions')
                texts.append(caps[int(rng.integers(len(caps)))]
                             .replace('A ', ''))
        else:
            texts = [obj['exp'] for obj in objects]
        conv = []
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.replace(
                    '.', '').replace('?', '').strip():
                raise RecordError('empty_text', f'object {i} has an empty '
                                  f'expression {text!r}')
            if rule == 'description':
                templates = SAV_DESCRIPTION_QUESTIONS
                template = templates[int(rng.integers(len(templates)))]
                question = template.format(class_name=text)
            else:
                template = SEG_QUESTIONS[int(rng.integers(len(SEG_QUESTIONS)))]
                question = template.format(class_name=text) \
                    if rule == 'short_caption' else \
                    expression_question(text, template)
            answer = ANSWER_LIST[int(rng.integers(len(ANSWER_LIST)))]
            conv.append(dict(input=question, output=answer))
        conv[0]['input'] = (IMAGE_PLACEHOLDER
                            + ('\n' if self.frame_newline else '')
                            + conv[0]['input'])
        results['conversation'] = conv
        return results


@TRANSFORMS.register_module()
class LoadSAVAnnotation(BaseTransform):
    """Read the SA-V masklet file of a pseudo-referring record.

    ``masklet`` is a list over annotated frames (every ``frame_stride``-th
    video frame) of lists over masklets of compressed RLEs (an invisible
    object is an all-zero RLE). The record's object keys index the masklet
    axis. The file's own ``video_frame_count`` must satisfy
    ``ceil(video_frame_count / frame_stride) == len(masklet)``
    (483 -> 121 in the official example).

    Args:
        frame_stride: video frames per annotated frame (4: 24 fps video,
            6 fps masks).

    Required Keys: ``anno_path`` (str), ``objects`` (list of dicts with
    ``anno_ids`` = ``[str(masklet index)]``).

    Added Keys: ``mask_tracks`` (dict key -> list over annotated frames of
    RLE dicts), ``num_video_frames`` (int, ``len(masklet)``),
    ``video_frame_count`` (int, from the file).

    Raises:
        RecordError: ``'missing_annotation'``, ``'bad_annotation'`` (not
        JSON, missing fields, an object key beyond ``masklet_num``, the
        frame-count rule broken).
    """

    def __init__(self, frame_stride: int = 4):
        self.frame_stride = frame_stride

    def transform(self, results: dict) -> dict:
        path, objects = require(results, 'anno_path', 'objects',
                                where='LoadSAVAnnotation')
        if not osp.isfile(path):
            raise RecordError('missing_annotation',
                              f'SA-V annotation not found: {path}')
        try:
            with open(path, encoding='utf-8') as f:
                data = json.load(f)
            masklet = data['masklet']
            count = int(data['video_frame_count'])
        except (OSError, ValueError, KeyError, TypeError,
                OverflowError) as exc:
            raise RecordError('bad_annotation', f'{path}: cannot read the '
                              f'masklet / video_frame_count: {exc!r}') from None
        if not isinstance(masklet, list) or not masklet:
            raise RecordError('bad_annotation', f'{path}: empty masklet')
        if math.ceil(count / self.frame_stride) != len(masklet):
            raise RecordError(
                'bad_annotation', f'{path}: video_frame_count {count} gives '
                f'ceil({count} / {self.frame_stride}) = '
                f'{math.ceil(count / self.frame_stride)} annotated frames, '
                f'masklet has {len(masklet)}')
        keys = sorted({k for obj in objects for k in obj['anno_ids']})
        tracks = {}
        for key in keys:
            k = int(key)
            if any(not isinstance(fr, list) or k >= len(fr)
                   for fr in masklet):
                raise RecordError('bad_annotation', f'{path}: object {key} '
                                  f'is not in every masklet frame')
            tracks[key] = [fr[k] for fr in masklet]
        results['mask_tracks'] = tracks
        results['num_video_frames'] = len(masklet)
        results['video_frame_count'] = count
        return results


# ---------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------
class _VideoReferringBase(Sa2VABaseDataset):
    """Shared parts: paths, length estimate.

    Args:
        sampled_frames, select_number: frames and objects per sample, used
            for the length estimate (match the pipeline's
            ``SampleVideoFrames`` / ``SampleVideoObjects``).
    """

    #: extra tokens per question beyond the expression (template words,
    #: answer, chat template), for the length estimate.
    QUESTION_OVERHEAD = 24

    def __init__(self, *args, sampled_frames: int = 5, select_number: int = 5,
                 **kwargs):
        self.sampled_frames = sampled_frames
        self.select_number = select_number
        super().__init__(*args, **kwargs)

    def _path(self, path: str) -> str:
        if not path or osp.isabs(path) or not self.data_root:
            return path
        return osp.join(self.data_root, path)

    def _text_estimate(self, texts: Sequence[str]) -> int:
        mean = float(np.mean([estimate_text_tokens(t) for t in texts]))
        return int(math.ceil(self.select_number
                             * (mean + self.QUESTION_OVERHEAD)))

    def modality_length_of(self, info: dict) -> int:
        return info['text_tokens_estimate'] + \
            NUM_IMAGE_TOKENS * self.sampled_frames


def _load_meta_expressions(path: str) -> dict:
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get('videos'), dict):
        raise ValueError(f'{path}: expected {{"videos": {{video: entry}}}}')
    return data['videos']


@DATASETS.register_module()
class MeViSDataset(_VideoReferringBase):
    """MeViS / ReVOS ("meta_expressions" + ``mask_dict.json``).

    On disk: ``ann_file`` = ``meta_expressions*.json`` (``{"videos": {key:
    {"frames": [stems], "expressions": {id: {"exp", "obj_id", "anno_id":
    [ints]}}}}}``); ``mask_file`` = ``mask_dict.json`` (``str(anno_id)`` ->
    list over the **sorted** frames of compressed RLE or null); frames at
    ``data_prefix['img_path']/<key>/<stem>.jpg``.

    Per video: ``record_id`` (key), ``video_dir``, ``frames`` (sorted
    stems), ``num_video_frames``, ``objects`` (one per expression in
    expression ids sorted as strings: ``{'exp', 'anno_ids': [str],
    'exp_id'}``), ``mask_tracks`` (the mask lists of the video's
    annotation ids), ``text_tokens_estimate``. Videos without expressions
    are left out (as Sa2VA); an expression with an empty ``anno_id`` list
    is a no-target expression (all-zero masks).

    Args:
        mask_file: path of ``mask_dict.json`` (relative to ``data_root``).
        **kwargs: see :class:`_VideoReferringBase`, :class:`Sa2VABaseDataset`.

    Raises (at load): ValueError naming the file and video / expression
    for a malformed entry, an ``anno_id`` missing from ``mask_file`` or a
    mask list whose length differs from the video's frame count.
    """

    def __init__(self, *args, mask_file: str = '', **kwargs):
        self.mask_file = mask_file
        kwargs.setdefault('data_prefix', dict(img_path=''))
        super().__init__(*args, **kwargs)

    def _load_masks(self, path: str) -> dict:
        masks = load_json(path)
        if not isinstance(masks, dict):
            raise ValueError(f'{path}: expected a dict anno_id -> mask list')
        return masks

    def _anno_ids(self, vid: str, eid: str, exp: dict, counter: int
                  ) -> list[str]:
        anno = exp.get('anno_id')
        if not isinstance(anno, list):
            raise ValueError(f'{self.ann_file}: video {vid!r} expression '
                             f'{eid!r}: anno_id must be a list, got '
                             f'{anno!r}')
        return [str(a) for a in anno]

    def load_data_list(self) -> list[dict]:
        videos = _load_meta_expressions(self.ann_file)
        mask_path = self._path(self.mask_file)
        masks = self._load_masks(mask_path)
        img_dir = self.data_prefix.get('img_path', '')
        out, counter, skipped = [], 0, 0
        for vid, entry in videos.items():
            where = f'{self.ann_file}: video {vid!r}'
            try:
                if not isinstance(entry['frames'], list):
                    raise TypeError('frames is not a list')
                frames = sorted(entry['frames'])
                exps = entry['expressions']
            except (KeyError, TypeError):
                raise ValueError(f'{where}: needs "frames" and '
                                 f'"expressions"') from None
            if not isinstance(exps, dict) or not all(
                    isinstance(s, str) for s in frames):
                raise ValueError(f'{where}: "frames" must be a list of '
                                 f'stems and "expressions" a dict')
            if not exps:
                skipped += 1
                continue
            if not frames:
                raise ValueError(f'{where}: has expressions but no frames')
            objects, tracks = [], {}
            for eid in sorted(exps):
                exp = exps[eid]
                if not isinstance(exp, dict) or not isinstance(
                        exp.get('exp'), str):
                    raise ValueError(f'{where} expression {eid!r}: needs a '
                                     f'string "exp"')
                anno_ids = self._anno_ids(vid, eid, exp, counter)
                counter += 1
                for a in anno_ids:
                    track = masks.get(a)
                    if track is None:
                        raise ValueError(f'{mask_path}: no masks for anno_id '
                                         f'{a!r} ({where} expression '
                                         f'{eid!r})')
                    if not isinstance(track, list) or \
                            len(track) != len(frames):
                        raise ValueError(
                            f'{mask_path}: anno_id {a!r} has '
                            f'{len(track) if isinstance(track, list) else 0}'
                            f' mask entries, {where} has {len(frames)} '
                            f'frames')
                    tracks[a] = track
                objects.append(dict(exp=exp['exp'], anno_ids=anno_ids,
                                    exp_id=str(eid)))
            info = dict(
                record_id=str(vid), video_dir=osp.join(img_dir, vid),
                frames=frames, num_video_frames=len(frames),
                objects=objects, mask_tracks=tracks,
                text_tokens_estimate=self._text_estimate(
                    [o['exp'] for o in objects]))
            bad = first_text_defect(
                (f'{where} expression {o["exp_id"]!r}', o['exp'])
                for o in objects)
            if bad:
                info['record_error'] = bad
            out.append(info)
        if skipped:
            print_log(f'{self.dataset_name}: {skipped} videos without '
                      f'expressions left out ({self.ann_file})',
                      logger='current')
        return out


@DATASETS.register_module()
class ReVOSDataset(MeViSDataset):
    """ReVOS: the MeViS format (``meta_expressions_train_.json``,
    ``mask_dict.json``; frames directly under ``revos/<key>/``). Reasoning
    questions (with ``?``) are used verbatim by the question rule; the extra
    keys (``height``, ``width``, ``type_id``) are not needed."""


@DATASETS.register_module()
class RefYTVOSDataset(MeViSDataset):
    """Ref-YouTube-VOS (``meta_expressions.json`` + ``mask_dict.pkl``).

    The expressions carry no ``anno_id``: the i-th expression of the file
    (videos in JSON order, expression ids sorted as strings inside each
    video) owns key ``str(i)`` of the pickled mask dict (Sa2VA v1's
    counter). Mask lists hold RLEs with ``bytes`` counts or None.
    """

    def _load_masks(self, path: str) -> dict:
        masks = load_data_pickle(path)
        if not isinstance(masks, dict):
            raise ValueError(f'{path}: expected a pickled dict '
                             f'str(index) -> mask list')
        return masks

    def _anno_ids(self, vid: str, eid: str, exp: dict, counter: int
                  ) -> list[str]:
        return [str(counter)]


@DATASETS.register_module()
class SAVReferringDataset(_VideoReferringBase):
    """SA-V pseudo-referring data (v1 ``sam_v_final_v3.json``; v2
    ``Ref-SAV.json`` has the same keys).

    On disk: ``ann_file`` = dict ``video_id -> {"video_path", "anno_path",
    "objects": {str(masklet index): {"formated": str, "short_caps":
    [str]}}}``; both paths relative to ``data_prefix['video_path']``
    (``sam_v_full/``), pointing at the SA-V release (mp4 at 24 fps, masklet
    JSON every 4th frame).

    Per video: ``record_id``, ``video_path``, ``anno_path``, ``objects``
    (JSON key order: ``{'exp': formated, 'short_caps', 'anno_ids':
    [key]}``), ``text_tokens_estimate``. The masklet file is read in the
    pipeline (:class:`LoadSAVAnnotation`), as Sa2VA does: it is large.

    Args:
        strip_duplicated_folder: Sa2VA v2's path fix: drop a leading
            ``sav_xxx/`` when the path is ``sav_xxx/sav_train/sav_xxx/...``
            (v1 uses the path as written; default).
        **kwargs: see :class:`_VideoReferringBase`.

    Raises (at load): ValueError naming the file and video for a
    malformed entry (missing paths, no objects, a non-integer object key,
    a missing ``formated`` caption).
    """

    def __init__(self, *args, strip_duplicated_folder: bool = False,
                 **kwargs):
        self.strip_duplicated_folder = strip_duplicated_folder
        kwargs.setdefault('data_prefix', dict(video_path=''))
        super().__init__(*args, **kwargs)

    def _fix(self, path: str) -> str:
        parts = path.split('/')
        if self.strip_duplicated_folder and len(parts) > 3 and \
                parts[1] == 'sav_train' and parts[0] == parts[2]:
            return '/'.join(parts[1:])
        return path

    def load_data_list(self) -> list[dict]:
        data = load_json(self.ann_file)
        if not isinstance(data, dict):
            raise ValueError(f'{self.ann_file}: expected a dict video_id -> '
                             f'entry')
        root = self.data_prefix.get('video_path', '')
        out = []
        for vid, entry in data.items():
            where = f'{self.ann_file}: video {vid!r}'
            if not isinstance(entry, dict) or not all(
                    isinstance(entry.get(k), str)
                    for k in ('video_path', 'anno_path')):
                raise ValueError(f'{where}: needs string "video_path" and '
                                 f'"anno_path"')
            objs = entry.get('objects')
            if not isinstance(objs, dict) or not objs:
                raise ValueError(f'{where}: needs a non-empty "objects" dict')
            objects = []
            for key, obj in objs.items():
                if not str(key).isdigit():
                    raise ValueError(f'{where}: object key {key!r} is not a '
                                     f'masklet index')
                if not isinstance(obj, dict) or not isinstance(
                        obj.get('formated'), str):
                    raise ValueError(f'{where} object {key!r}: needs a '
                                     f'string "formated"')
                caps = obj.get('short_caps') or []
                if not isinstance(caps, list):
                    raise ValueError(f'{where} object {key!r}: "short_caps" '
                                     f'must be a list of strings')
                objects.append(dict(exp=obj['formated'],
                                    short_caps=list(caps),
                                    anno_ids=[str(key)]))
            info = dict(
                record_id=str(vid),
                video_path=osp.join(root, self._fix(entry['video_path'])),
                anno_path=osp.join(root, self._fix(entry['anno_path'])),
                objects=objects,
                text_tokens_estimate=self._text_estimate(
                    [o['exp'] for o in objects]))
            bad = first_text_defect(
                [(f'{where} object {o["anno_ids"][0]} formated', o['exp'])
                 for o in objects]
                + [(f'{where} object {o["anno_ids"][0]} short_caps[{j}]', c)
                   for o in objects for j, c in enumerate(o['short_caps'])])
            if bad:
                info['record_error'] = bad
            out.append(info)
        return out
