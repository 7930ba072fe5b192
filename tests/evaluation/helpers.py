"""Shared pieces of the evaluation tests: the tiny model and forced
generation (a random tiny model would rarely write [SEG])."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers import LogitsProcessor, LogitsProcessorList


class ForcePlan(LogitsProcessor):
    """Makes ``generate`` emit ``plan`` token by token (then its last id)."""

    def __init__(self, plan):
        self.plan = list(plan)
        self.step = 0

    def __call__(self, input_ids, scores):
        out = torch.full_like(scores, -1e9)
        out[:, self.plan[min(self.step, len(self.plan) - 1)]] = 0
        self.step += 1
        return out


def forced(plan):
    """``logits_processor`` keyword forcing ``plan``."""
    return dict(logits_processor=LogitsProcessorList([ForcePlan(plan)]))


def seg_plan(predictor, phrase='the cat', n_seg=2):
    """Ids of ``phrase [SEG]`` x n_seg, then the stop token."""
    tok = predictor.tokenizer
    words = tok.encode(phrase, add_special_tokens=False)
    plan = []
    for _ in range(n_seg):
        plan += words + [predictor.model.seg_token_id]
    return plan + [predictor.stop_ids[-1]]


def random_image(h, w, seed):
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8))


def build_tiny_model(tokenizer_dir):
    from tests.models.test_sa2va import build_tiny
    return build_tiny(tokenizer_dir)
