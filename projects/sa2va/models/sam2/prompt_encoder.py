"""SAM2 prompt encoder (``sam_prompt_encoder.*``): points, boxes and mask
prompts to sparse tokens and a dense embedding."""
from typing import Optional, Tuple, Type

import torch
from torch import Tensor, nn

from .common import LayerNorm2d
from .position_encoding import PositionEmbeddingRandom


class PromptEncoder(nn.Module):
    """Encodes prompts for the mask decoder.

    Args:
        embed_dim: C, the token width (= hidden_dim).
        image_embedding_size: (h, w) of the image embedding (S / 16).
        input_image_size: (H, W) of the model input, the unit of point
            coordinates (pixels).
        mask_in_chans: hidden channels of the mask-downscaling convs.

    Sparse tokens: a point at pixel (x, y) becomes the random-Fourier PE of
    ``((x + 0.5) / W, (y + 0.5) / H)``; label -1 (padding) replaces it with
    ``not_a_point_embed``, labels 0..3 add ``point_embeddings[label]``
    (0 negative, 1 positive, 2 / 3 box corners). When no box is given a
    padding point is appended.
    """

    def __init__(self, embed_dim: int, image_embedding_size: Tuple[int, int],
                 input_image_size: Tuple[int, int], mask_in_chans: int,
                 activation: Type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = tuple(input_image_size)
        self.image_embedding_size = tuple(image_embedding_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.num_point_embeddings = 4
        self.point_embeddings = nn.ModuleList(
            nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0],
                                4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            activation(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2,
                      stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> Tensor:
        """Random-Fourier PE of the embedding grid's cell centres,
        ``(1, C, h, w)`` float32."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: Tensor, labels: Tensor, pad: bool) -> Tensor:
        """points ``(B, N, 2)`` pixels (x, y), labels ``(B, N)`` int in
        {-1, 0, 1, 2, 3} -> ``(B, N + pad, C)``."""
        points = points + 0.5
        if pad:
            b = points.shape[0]
            points = torch.cat([points, points.new_zeros(b, 1, 2)], dim=1)
            labels = torch.cat([labels, -labels.new_ones(b, 1)], dim=1)
        emb = self.pe_layer.forward_with_coords(points, self.input_image_size)
        labels = labels[..., None]
        emb = torch.where(labels == -1, self.not_a_point_embed.weight.to(emb.dtype),
                          emb)
        for i, point_embed in enumerate(self.point_embeddings):
            emb = torch.where(labels == i, emb + point_embed.weight, emb)
        return emb

    def _embed_boxes(self, boxes: Tensor) -> Tensor:
        """boxes ``(B, 4)`` pixels (x0, y0, x1, y1) -> ``(B, 2, C)``."""
        coords = (boxes + 0.5).reshape(-1, 2, 2)
        emb = self.pe_layer.forward_with_coords(coords, self.input_image_size)
        return torch.stack([emb[:, 0] + self.point_embeddings[2].weight[0],
                            emb[:, 1] + self.point_embeddings[3].weight[0]],
                           dim=1)

    @staticmethod
    def _batch_size(points, boxes, masks) -> int:
        if points is not None:
            return points[0].shape[0]
        if boxes is not None:
            return boxes.shape[0]
        if masks is not None:
            return masks.shape[0]
        return 1

    def forward(self, points: Optional[Tuple[Tensor, Tensor]],
                boxes: Optional[Tensor],
                masks: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """Returns sparse ``(B, N_tokens, C)`` and dense ``(B, C, h, w)``.

        points: (coords ``(B, N, 2)`` float pixels, labels ``(B, N)`` int) or
        None; boxes ``(B, 4)`` or None; masks ``(B, 1, 4h, 4w)`` logits or
        None (then the dense output is ``no_mask_embed`` everywhere).
        """
        b = self._batch_size(points, boxes, masks)
        weight = self.no_mask_embed.weight
        parts = []
        if points is not None:
            parts.append(self._embed_points(points[0], points[1],
                                            pad=boxes is None))
        if boxes is not None:
            parts.append(self._embed_boxes(boxes))
        sparse = (torch.cat(parts, dim=1) if parts else
                  weight.new_empty(b, 0, self.embed_dim))
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            h, w = self.image_embedding_size
            dense = weight.reshape(1, -1, 1, 1).expand(b, -1, h, w)
        return sparse, dense
