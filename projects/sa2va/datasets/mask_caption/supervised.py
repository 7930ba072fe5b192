"""Captioned mask <-> caption samples in Sa2VA's supervised forms (family 6
in the Sa2VA mix): :class:`MaskCaptionToSa2VA`."""
from __future__ import annotations

import numpy as np
import torch

from ...constants import GRID_SIZE, IMAGE_PLACEHOLDER
from ...registry import TRANSFORMS
from ...transforms.base import BaseTransform, RecordError, bump, require
from ...transforms.functional import pool_prompt_masks, visual_prompt_text
from ...transforms.mask_caption import (MASK_CAPTION_KEYS,
                                        MASK_CAPTION_OPTION_A_KEYS)
from ..refseg import ANSWER_LIST, SEG_QUESTIONS, referring_turn
from ..visual_prompt import DAM_INSTRUCTION

#: the supervised forms of a captioned mask <-> caption sample in a Sa2VA mix
SUPERVISED_TASKS = ('describe', 'segment')

def _task_weights(tasks) -> tuple[tuple[str, ...], np.ndarray]:
    items = list(tasks.items()) if isinstance(tasks, dict) else \
        [(t, 1.0) for t in ([tasks] if isinstance(tasks, str) else tasks)]
    names = tuple(str(t) for t, _ in items)
    unknown = set(names) - set(SUPERVISED_TASKS)
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(f'tasks must name distinct tasks of '
                         f'{SUPERVISED_TASKS}, got {tasks!r}')
    weights = np.asarray([float(w) for _, w in items])
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f'task weights must be >= 0 with a positive sum, '
                         f'got {tasks!r}')
    return names, weights / weights.sum()

@TRANSFORMS.register_module()
class MaskCaptionToSa2VA(BaseTransform):
    """A captioned mask <-> caption sample as a supervised Sa2VA sample.

    The cycle (:class:`~projects.sa2va.models.cycle.MaskCaptionCycleModel`)
    trains family 6 with pseudo captions; in the Sa2VA mix the samples that
    carry a ground-truth caption (RefCOCO captions, Describe Anything) train
    the two loops directly, in Sa2VA's own forms (so they mix with the other
    families in one batch, one model, one loss):

    * ``'describe'`` (loop 1, mask -> caption): frame 1 with its region as a
      visual prompt; ``conversation`` = ``[{input: '<image>\\n' + 'There
      are 1 part regions in the picture: region1<vp>' + K context tokens +
      '</vp>.\\n' + instruction, output: caption}]`` (K = True cells of the
      16 x 16 grid; the text of :class:`~projects.sa2va.transforms.
      formatting.AddVisualPromptText`), ``region_token_counts`` = ``[K]``;
      this is the owner's Describe Anything SFT form, which the cycle's
      caption prompt also uses.
    * ``'segment'`` (loop 2, caption -> mask): frame 2 with a Sa2VA v1
      referring turn about the caption (:func:`~projects.sa2va.datasets.
      refseg.referring_turn`) and frame 2's mask as the ground truth.

    One task per sample, drawn from ``results['rng']`` with the ``tasks``
    weights (no draw when there is one task).

    Output tensors, ``route='direct'`` (``MaskCaptionOutputs`` default):
    ``pixel_values (1, 3, s, s)`` (the frame's tile), ``num_tiles`` 1;
    describe: ``prompt_masks (1, g, g) bool``, ``vp_overall_mask (1,) bool``
    True; segment: ``g_pixel_values (3, S, S) uint8``, ``masks (1, S, S)
    uint8`` {0, 1}.

    ``route='option_a'`` (the seed's intermediate format): the tile and the
    grid are derived on device by the data preprocessor, so the sample
    carries ``option_a_image (3, S, S)`` (float32 normalised, or uint8
    bytes with ``MaskCaptionOutputs(as_uint8=True)``) instead of
    ``pixel_values`` and, for describe, ``option_a_mask (S, S)`` {0, 1}
    (float32 or uint8) instead of ``prompt_masks``; K is counted here with the
    preprocessor's own rule (nearest to 16 x 16), so the text and the grid
    agree. ``sa2va_collate_fn`` leaves a placeholder tile / grid that the
    preprocessor fills.

    Qwen-VL (:class:`~projects.sa2va.transforms.qwen_vl.
    QwenVLMaskCaptionOutputs`): ``pixel_values (n_patches, 3 * 2 * p * p)``,
    ``image_grid_thw (1, 3)``, ``num_image_tokens`` of the frame (no
    ``num_tiles``), describe: ``prompt_masks (1, gh, gw) bool`` on its merged
    grid; the rest as the direct route.

    The ``*1`` / ``*2`` keys are removed.

    Args:
        tasks: a task name, a list of names (equal weights) or a dict name
            -> weight, names from :data:`SUPERVISED_TASKS`.
        instruction: the describe question (the owner's
            :data:`~projects.sa2va.datasets.visual_prompt.DAM_INSTRUCTION`).
        questions, answers: referring templates (Sa2VA v1's).
        grid: side of the option-A prompt grid (the preprocessor's).

    Required Keys: ``caption`` and the keys of either route;
    ``rng`` when more than one task.

    Added Keys: ``conversation``, ``num_tiles``, ``mc_task`` and the tensors
    above; ``region_token_counts`` for describe.

    Raises:
        ValueError: a sample without a caption (``caption`` None): an
            uncaptioned source (SA-V pairs, SA-1B, OpenImage) has no
            supervised form; train it with the cycle model.
        RecordError: ``'empty_text'`` (a blank caption).
    """

    def __init__(self, tasks=('describe', 'segment'),
                 instruction: str = DAM_INSTRUCTION,
                 questions=SEG_QUESTIONS, answers=ANSWER_LIST,
                 grid: int = GRID_SIZE):
        self.tasks, self.weights = _task_weights(tasks)
        self.grid = int(grid)
        self.instruction = instruction.strip()
        self.questions = tuple(questions)
        self.answers = tuple(answers)

    def _task(self, results: dict) -> str:
        if len(self.tasks) == 1:
            return self.tasks[0]
        rng, = require(results, 'rng', where='MaskCaptionToSa2VA')
        return self.tasks[int(rng.choice(len(self.tasks), p=self.weights))]

    def transform(self, results: dict) -> dict:
        caption = results.get('caption')
        if caption is None:
            raise ValueError(
                f'MaskCaptionToSa2VA: {results.get("dataset_name")!r} gave a '
                f'sample without a caption ({results.get("dataset_type")!r}); '
                f'uncaptioned mask <-> caption sources (SA-V pairs, SA-1B, '
                f'OpenImage) have no supervised Sa2VA form: train them with '
                f'the cycle model (configs/mask_caption_cycle_*.py)')
        option_a = 'image1' in results
        task = self._task(results)
        k = 1 if task == 'describe' else 2
        if option_a:
            results['option_a_image'] = results[f'image{k}']
            results['num_tiles'] = 1
        elif f'image_grid_thw{k}' in results:  # a Qwen-VL image
            for key in ('pixel_values', 'image_grid_thw', 'num_image_tokens'):
                results[key] = results[f'{key}{k}']
        else:
            results['pixel_values'] = results[f'pixel_values{k}'][None]
            results['num_tiles'] = 1
        if task == 'describe':
            # the decoded source masks are the prompt here, not a GT
            results.pop('masks', None)
            text = caption.strip()
            if not text:
                raise RecordError('empty_text', 'the caption is empty')
            if option_a:
                mask = results['mask1']
                results['option_a_mask'] = mask
                grid = pool_prompt_masks(mask[None], self.grid, 'nearest')
            else:
                grid = results['prompt_masks1'][None].bool()
                results['prompt_masks'] = grid
                results['vp_overall_mask'] = torch.ones(1, dtype=torch.bool)
            results['region_token_counts'] = [int(grid.sum())]
            results['conversation'] = [dict(
                input=IMAGE_PLACEHOLDER + '\n' + visual_prompt_text(
                    results['region_token_counts'], compact=True)
                + self.instruction,
                output=text)]
        else:
            rng, = require(results, 'rng', where='MaskCaptionToSa2VA')
            _, turn = referring_turn(caption, rng, self.questions,
                                     self.answers, first=True,
                                     what='the caption')
            results['conversation'] = [turn]
            mask = results['mask2'] if option_a else results['masks2']
            results['masks'] = (mask != 0).to(torch.uint8)[None]
            results['g_pixel_values'] = results['g_pixel_values2']
        results['mc_task'] = task
        bump(results, f'mc_{task}')
        for key in MASK_CAPTION_KEYS + MASK_CAPTION_OPTION_A_KEYS + (
                'image_grid_thw1', 'image_grid_thw2', 'num_image_tokens1',
                'num_image_tokens2'):
            if key not in ('caption', 'dataset_type'):
                results.pop(key, None)
        return results
