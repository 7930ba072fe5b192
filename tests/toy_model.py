"""A toy model for testing the training wiring before the real model.

It consumes the real collated batch (ids, labels, image tiles) so the data
path, registries, runner, checkpoints and resume are exercised end to end.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModel

from projects.sa2va.registry import MODELS


@MODELS.register_module()
class ToyConversationModel(BaseModel):
    """Embedding + image-conditioned linear LM head; next-token CE."""

    def __init__(self, vocab_size: int = 2048, dim: int = 16,
                 data_preprocessor=None):
        super().__init__(data_preprocessor=data_preprocessor)
        self.embed = nn.Embedding(vocab_size, dim)
        self.image_proj = nn.Linear(3, dim)
        self.head = nn.Linear(dim, vocab_size)

    def forward(self, input_ids, labels, pixel_values=None, image_flags=None,
                num_tiles=None, mode='loss', **kwargs):
        h = self.embed(input_ids)
        if pixel_values is not None:
            per_tile = self.image_proj(pixel_values.float().mean((2, 3)))
            per_tile = per_tile * image_flags[:, None].float()
            per_sample = torch.stack([t.mean(0) for t in
                                      per_tile.split(num_tiles)])
            h = h + per_sample[:, None]
        logits = self.head(h)[:, :-1]
        target = labels[:, 1:]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                               target.reshape(-1), ignore_index=-100)
        if mode == 'loss':
            return dict(loss=loss)
        return logits
