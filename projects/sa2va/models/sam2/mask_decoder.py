"""SAM2 mask decoder (``sam_mask_decoder.*``)."""
from typing import List, Optional, Tuple, Type

import torch
from torch import Tensor, nn

from .common import MLP, LayerNorm2d
from .transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    """Predicts masks, IoUs and an object score from image and prompt
    embeddings with a two-way transformer.

    Output tokens, in order: ``[obj_score_token (if pred_obj_scores),
    iou_token, mask_tokens 0..num_multimask_outputs]``, then the prompt
    tokens. Token 0 of ``mask_tokens`` is the single-mask output.
    ``conv_s0`` / ``conv_s1`` (C -> C/8, C -> C/4) project the stride-4 / 8
    backbone levels; :class:`SAM2Base` applies them in ``forward_image`` and
    the decoder adds the projected maps during upscaling.
    """

    def __init__(self, transformer_dim: int, transformer: TwoWayTransformer,
                 num_multimask_outputs: int = 3,
                 activation: Type[nn.Module] = nn.GELU,
                 iou_head_depth: int = 3, iou_head_hidden_dim: int = 256,
                 use_high_res_features: bool = False,
                 iou_prediction_use_sigmoid: bool = False,
                 dynamic_multimask_via_stability: bool = False,
                 dynamic_multimask_stability_delta: float = 0.05,
                 dynamic_multimask_stability_thresh: float = 0.98,
                 pred_obj_scores: bool = False,
                 pred_obj_scores_mlp: bool = False,
                 use_multimask_token_for_obj_ptr: bool = False) -> None:
        super().__init__()
        c = transformer_dim
        self.transformer_dim = c
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, c)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, c)
        self.pred_obj_scores = pred_obj_scores
        if pred_obj_scores:
            self.obj_score_token = nn.Embedding(1, c)
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(c, c // 4, kernel_size=2, stride=2),
            LayerNorm2d(c // 4),
            activation(),
            nn.ConvTranspose2d(c // 4, c // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.use_high_res_features = use_high_res_features
        if use_high_res_features:
            self.conv_s0 = nn.Conv2d(c, c // 8, kernel_size=1, stride=1)
            self.conv_s1 = nn.Conv2d(c, c // 4, kernel_size=1, stride=1)
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(c, c, c // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(
            c, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth,
            sigmoid_output=iou_prediction_use_sigmoid)
        if pred_obj_scores:
            self.pred_obj_score_head = (MLP(c, c, 1, 3) if pred_obj_scores_mlp
                                        else nn.Linear(c, 1))
        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.dynamic_multimask_stability_delta = dynamic_multimask_stability_delta
        self.dynamic_multimask_stability_thresh = dynamic_multimask_stability_thresh

    def forward(self, image_embeddings: Tensor, image_pe: Tensor,
                sparse_prompt_embeddings: Tensor,
                dense_prompt_embeddings: Tensor, multimask_output: bool,
                repeat_image: bool = False,
                high_res_features: Optional[List[Tensor]] = None
                ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Decode masks.

        Args:
            image_embeddings: ``(B, C, h, w)`` (or ``(1, C, h, w)`` with
                ``repeat_image``).
            image_pe: ``(1, C, h, w)`` dense PE.
            sparse_prompt_embeddings: ``(B, N, C)``.
            dense_prompt_embeddings: ``(B, C, h, w)``.
            multimask_output: keep mask tokens 1.. (else token 0, or the
                stability fallback when enabled, in eval).
            high_res_features: ``[(B, C/8, 4h, 4w), (B, C/4, 2h, 2w)]``
                (projected), required with ``use_high_res_features``.

        Returns:
            masks ``(B, M, 4h, 4w)`` logits, iou_pred ``(B, M)``,
            sam_tokens_out ``(B, M', C)`` (mask tokens 1.. when multimask and
            ``use_multimask_token_for_obj_ptr``, else token 0) and
            object_score_logits ``(B, 1)``; M = 3 with multimask else 1.
        """
        masks, iou_pred, mask_tokens_out, obj_logits = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings,
            dense_prompt_embeddings, repeat_image, high_res_features)
        return (*self.select_outputs(masks, iou_pred, mask_tokens_out,
                                     multimask_output), obj_logits)

    def select_outputs(self, masks: Tensor, iou_pred: Tensor,
                       mask_tokens_out: Tensor, multimask_output: bool
                       ) -> Tuple[Tensor, Tensor, Tensor]:
        """From all-token results (``(B, 4, H, W)``, ``(B, 4)``,
        ``(B, 4, C)``) keep tokens 1.. with multimask output, else token 0
        (or the stability fallback in eval when enabled); the output tokens
        are 1.. only with ``use_multimask_token_for_obj_ptr``."""
        if multimask_output:
            masks, iou_pred = masks[:, 1:], iou_pred[:, 1:]
        elif self.dynamic_multimask_via_stability and not self.training:
            masks, iou_pred = self._dynamic_multimask_via_stability(masks,
                                                                    iou_pred)
        else:
            masks, iou_pred = masks[:, 0:1], iou_pred[:, 0:1]
        if multimask_output and self.use_multimask_token_for_obj_ptr:
            sam_tokens_out = mask_tokens_out[:, 1:]
        else:
            sam_tokens_out = mask_tokens_out[:, 0:1]
        return masks, iou_pred, sam_tokens_out

    def output_tokens(self) -> Tensor:
        """The learned output tokens ``(n_out, C)`` in decoder order."""
        tokens = [self.iou_token.weight, self.mask_tokens.weight]
        if self.pred_obj_scores:
            tokens.insert(0, self.obj_score_token.weight)
        return torch.cat(tokens, dim=0)

    def predict_masks(self, image_embeddings: Tensor, image_pe: Tensor,
                      sparse_prompt_embeddings: Tensor,
                      dense_prompt_embeddings: Tensor,
                      repeat_image: bool = False,
                      high_res_features: Optional[List[Tensor]] = None,
                      return_transformer_out: bool = False):
        """All-token decoding: masks ``(B, 4, 4h, 4w)``, iou ``(B, 4)``,
        mask tokens ``(B, 4, C)``, object score logits ``(B, 1)`` (10 when
        object scores are off); with ``return_transformer_out`` also the
        transformer's (queries ``(B, n_out + N, C)``, keys ``(B, hw, C)``)."""
        s = 1 if self.pred_obj_scores else 0
        b = sparse_prompt_embeddings.shape[0]
        out_tokens = self.output_tokens().unsqueeze(0).expand(b, -1, -1)
        tokens = torch.cat([out_tokens.to(sparse_prompt_embeddings.dtype),
                            sparse_prompt_embeddings], dim=1)
        if repeat_image:
            src = torch.repeat_interleave(image_embeddings, b, dim=0)
        else:
            if image_embeddings.shape[0] != b:
                raise ValueError(f'{image_embeddings.shape[0]} image embeddings '
                                 f'for {b} prompt sets')
            src = image_embeddings
        src = src + dense_prompt_embeddings
        if image_pe.shape[0] != 1:
            raise ValueError('image_pe must have batch size 1')
        pos_src = torch.repeat_interleave(image_pe, b, dim=0)
        bb, c, h, w = src.shape
        hs, keys = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, s, :]
        mask_tokens_out = hs[:, s + 1:s + 1 + self.num_mask_tokens, :]

        src = keys.transpose(1, 2).reshape(bb, c, h, w)
        if not self.use_high_res_features:
            upscaled = self.output_upscaling(src)
        else:
            if high_res_features is None:
                raise ValueError('use_high_res_features needs high_res_features')
            dc1, ln1, act1, dc2, act2 = self.output_upscaling
            feat_s0, feat_s1 = high_res_features
            upscaled = act1(ln1(dc1(src) + feat_s1))
            upscaled = act2(dc2(upscaled) + feat_s0)
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :])
             for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        bb, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(bb, c, h * w)).reshape(bb, -1, h, w)
        iou_pred = self.iou_prediction_head(iou_token_out)
        if self.pred_obj_scores:
            obj_logits = self.pred_obj_score_head(hs[:, 0, :])
        else:
            obj_logits = 10.0 * iou_pred.new_ones(iou_pred.shape[0], 1)
        if return_transformer_out:
            return masks, iou_pred, mask_tokens_out, obj_logits, (hs, keys)
        return masks, iou_pred, mask_tokens_out, obj_logits

    def _stability_scores(self, mask_logits: Tensor) -> Tensor:
        """IoU between the masks thresholded at +delta and -delta, ``(B, M)``."""
        mask_logits = mask_logits.flatten(-2)
        delta = self.dynamic_multimask_stability_delta
        area_i = torch.sum(mask_logits > delta, dim=-1).float()
        area_u = torch.sum(mask_logits > -delta, dim=-1).float()
        return torch.where(area_u > 0, area_i / area_u, 1.0)

    def _dynamic_multimask_via_stability(self, all_masks: Tensor,
                                         all_ious: Tensor):
        """Single-mask output, replaced by the best multimask output where
        the single mask is unstable. Returns ``(B, 1, H, W)``, ``(B, 1)``."""
        multi_masks, multi_ious = all_masks[:, 1:], all_ious[:, 1:]
        best = torch.argmax(multi_ious, dim=-1)
        rows = torch.arange(multi_ious.shape[0], device=all_ious.device)
        best_masks = multi_masks[rows, best].unsqueeze(1)
        best_ious = multi_ious[rows, best].unsqueeze(1)
        single_masks, single_ious = all_masks[:, 0:1], all_ious[:, 0:1]
        stable = (self._stability_scores(single_masks)
                  >= self.dynamic_multimask_stability_thresh)
        masks = torch.where(stable[..., None, None].expand_as(single_masks),
                            single_masks, best_masks)
        ious = torch.where(stable.expand_as(single_ious), single_ious,
                           best_ious)
        return masks, ious

