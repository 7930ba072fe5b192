"""SAM2Base: image encoder + prompt encoder + mask decoder + memory path.

Attribute names give the official state-dict keys (``image_encoder.*``,
``mask_downsample.*``, ``memory_attention.*``, ``memory_encoder.*``,
``sam_prompt_encoder.*``, ``sam_mask_decoder.*``, ``obj_ptr_proj.*``,
``obj_ptr_tpos_proj.*`` and the top-level ``maskmem_tpos_enc``,
``no_mem_embed``, ``no_mem_pos_enc``, ``no_obj_ptr``,
``no_obj_embed_spatial``).

Conventions: images ``(B, 3, S, S)`` float normalised with the ImageNet
mean / std (:func:`normalize_sam2_images`); features are BCHW, except the
sequence-first ``(H*W, B, C)`` lists produced by
:meth:`SAM2Base.prepare_backbone_features` for the tracker. Masks are logits;
low-res masks are ``S / 4`` square (256 for S = 1024). Device and dtype come
from the inputs; nothing calls ``.cuda()`` or enters autocast.
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from projects.sa2va.constants import IMAGENET_MEAN, IMAGENET_STD
from projects.sa2va.transforms.functional import normalize_uint8

from .common import MLP
from .mask_decoder import MaskDecoder
from .memory_attention import MemoryAttention
from .memory_encoder import MemoryEncoder
from .neck import ImageEncoder
from .position_encoding import get_1d_sine_pe
from .prompt_encoder import PromptEncoder
from .transformer import TwoWayTransformer

NO_OBJ_SCORE = -1024.0  # mask logit written where no object is predicted


def normalize_sam2_images(images: Tensor, dtype: torch.dtype = torch.float32
                          ) -> Tensor:
    """uint8 RGB ``(B, 3, H, W)`` in [0, 255] -> ``dtype`` SAM2 input:
    ``(x / 255 - mean) / std`` per channel (ImageNet mean / std), computed in
    float32 (bit-identical to the reference preprocessing) then cast; in
    place on one float32 buffer (``normalize_uint8``)."""
    if images.dtype != torch.uint8:
        raise TypeError(f'expected uint8 images, got {images.dtype}')
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f'expected (B, 3, H, W), got {tuple(images.shape)}')
    return normalize_uint8(images, IMAGENET_MEAN, IMAGENET_STD, dtype)


def select_closest_cond_frames(frame_idx: int, cond_frame_outputs: Dict,
                               max_cond_frame_num: int):
    """Split the conditioning frames into (selected, unselected) dicts: all of
    them when ``max_cond_frame_num`` is -1 or not exceeded, otherwise the
    closest one before, the closest one at / after and then the nearest
    others up to ``max_cond_frame_num``."""
    if max_cond_frame_num == -1 or len(cond_frame_outputs) <= max_cond_frame_num:
        return cond_frame_outputs, {}
    if max_cond_frame_num < 2:
        raise ValueError('max_cond_frames_in_attn must be -1 or >= 2')
    selected = {}
    before = max((t for t in cond_frame_outputs if t < frame_idx), default=None)
    if before is not None:
        selected[before] = cond_frame_outputs[before]
    after = min((t for t in cond_frame_outputs if t >= frame_idx), default=None)
    if after is not None:
        selected[after] = cond_frame_outputs[after]
    rest = sorted((t for t in cond_frame_outputs if t not in selected),
                  key=lambda t: abs(t - frame_idx))
    for t in rest[:max_cond_frame_num - len(selected)]:
        selected[t] = cond_frame_outputs[t]
    unselected = {t: v for t, v in cond_frame_outputs.items()
                  if t not in selected}
    return selected, unselected


class SAM2Base(nn.Module):
    """SAM2 / SAM2.1 model. Arguments are the official yaml ``model:`` fields
    (defaults as in the reference constructor); build it with
    :func:`projects.sa2va.models.build_sam2`.

    The decoder sizes are fixed as in the reference builder: two-way
    transformer depth 2, 8 heads, MLP 2048, IoU head 3 x 256,
    ``mask_in_chans`` 16, 3 multimask outputs.
    """

    def __init__(self, image_encoder: ImageEncoder,
                 memory_attention: MemoryAttention,
                 memory_encoder: MemoryEncoder,
                 num_maskmem: int = 7, image_size: int = 512,
                 backbone_stride: int = 16,
                 sigmoid_scale_for_mem_enc: float = 1.0,
                 sigmoid_bias_for_mem_enc: float = 0.0,
                 binarize_mask_from_pts_for_mem_enc: bool = False,
                 use_mask_input_as_output_without_sam: bool = False,
                 max_cond_frames_in_attn: int = -1,
                 directly_add_no_mem_embed: bool = False,
                 use_high_res_features_in_sam: bool = False,
                 multimask_output_in_sam: bool = False,
                 multimask_min_pt_num: int = 1,
                 multimask_max_pt_num: int = 1,
                 multimask_output_for_tracking: bool = False,
                 use_multimask_token_for_obj_ptr: bool = False,
                 iou_prediction_use_sigmoid: bool = False,
                 memory_temporal_stride_for_eval: int = 1,
                 non_overlap_masks_for_mem_enc: bool = False,
                 use_obj_ptrs_in_encoder: bool = False,
                 max_obj_ptrs_in_encoder: int = 16,
                 add_tpos_enc_to_obj_ptrs: bool = True,
                 proj_tpos_enc_in_obj_ptrs: bool = False,
                 use_signed_tpos_enc_to_obj_ptrs: bool = False,
                 only_obj_ptrs_in_the_past_for_eval: bool = False,
                 pred_obj_scores: bool = False,
                 pred_obj_scores_mlp: bool = False,
                 fixed_no_obj_ptr: bool = False,
                 soft_no_obj_ptr: bool = False,
                 use_mlp_for_obj_ptr_proj: bool = False,
                 no_obj_embed_spatial: bool = False,
                 sam_mask_decoder_extra_args: Optional[dict] = None,
                 compile_image_encoder: bool = False) -> None:
        super().__init__()
        if compile_image_encoder:
            raise ValueError('compile_image_encoder is not supported; call '
                             'torch.compile on model.image_encoder yourself')
        self.image_encoder = image_encoder
        self.use_high_res_features_in_sam = use_high_res_features_in_sam
        self.num_feature_levels = 3 if use_high_res_features_in_sam else 1
        self.use_obj_ptrs_in_encoder = use_obj_ptrs_in_encoder
        self.max_obj_ptrs_in_encoder = max_obj_ptrs_in_encoder
        if use_obj_ptrs_in_encoder:
            # downsamples a mask prompt to stride 4 (used when a mask input
            # replaces SAM's output, to still produce an object pointer)
            self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.add_tpos_enc_to_obj_ptrs = add_tpos_enc_to_obj_ptrs
        if proj_tpos_enc_in_obj_ptrs and not add_tpos_enc_to_obj_ptrs:
            raise ValueError('proj_tpos_enc_in_obj_ptrs needs '
                             'add_tpos_enc_to_obj_ptrs')
        self.proj_tpos_enc_in_obj_ptrs = proj_tpos_enc_in_obj_ptrs
        self.use_signed_tpos_enc_to_obj_ptrs = use_signed_tpos_enc_to_obj_ptrs
        self.only_obj_ptrs_in_the_past_for_eval = \
            only_obj_ptrs_in_the_past_for_eval

        self.memory_attention = memory_attention
        self.hidden_dim = image_encoder.neck.d_model
        self.memory_encoder = memory_encoder
        out_proj = getattr(memory_encoder, 'out_proj', None)
        self.mem_dim = (out_proj.weight.shape[0]
                        if isinstance(out_proj, nn.Conv2d) else self.hidden_dim)
        self.num_maskmem = num_maskmem
        self.maskmem_tpos_enc = nn.Parameter(
            torch.zeros(num_maskmem, 1, 1, self.mem_dim))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, self.hidden_dim))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, self.hidden_dim))
        self.directly_add_no_mem_embed = directly_add_no_mem_embed
        self.sigmoid_scale_for_mem_enc = sigmoid_scale_for_mem_enc
        self.sigmoid_bias_for_mem_enc = sigmoid_bias_for_mem_enc
        self.binarize_mask_from_pts_for_mem_enc = \
            binarize_mask_from_pts_for_mem_enc
        self.non_overlap_masks_for_mem_enc = non_overlap_masks_for_mem_enc
        self.memory_temporal_stride_for_eval = memory_temporal_stride_for_eval
        self.use_mask_input_as_output_without_sam = \
            use_mask_input_as_output_without_sam
        self.multimask_output_in_sam = multimask_output_in_sam
        self.multimask_min_pt_num = multimask_min_pt_num
        self.multimask_max_pt_num = multimask_max_pt_num
        self.multimask_output_for_tracking = multimask_output_for_tracking
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr
        self.iou_prediction_use_sigmoid = iou_prediction_use_sigmoid

        self.image_size = image_size
        self.backbone_stride = backbone_stride
        self.sam_mask_decoder_extra_args = sam_mask_decoder_extra_args
        self.pred_obj_scores = pred_obj_scores
        self.pred_obj_scores_mlp = pred_obj_scores_mlp
        self.fixed_no_obj_ptr = fixed_no_obj_ptr
        self.soft_no_obj_ptr = soft_no_obj_ptr
        if fixed_no_obj_ptr and not (pred_obj_scores and use_obj_ptrs_in_encoder):
            raise ValueError('fixed_no_obj_ptr needs pred_obj_scores and '
                             'use_obj_ptrs_in_encoder')
        if pred_obj_scores and use_obj_ptrs_in_encoder:
            self.no_obj_ptr = nn.Parameter(torch.zeros(1, self.hidden_dim))
        self.use_mlp_for_obj_ptr_proj = use_mlp_for_obj_ptr_proj
        self.no_obj_embed_spatial = None
        if no_obj_embed_spatial:
            self.no_obj_embed_spatial = nn.Parameter(
                torch.zeros(1, self.mem_dim))

        self._build_sam_heads()
        self.max_cond_frames_in_attn = max_cond_frames_in_attn
        self._init_extra_params()

    # ------------------------------------------------------------------ build
    def _build_sam_heads(self) -> None:
        c = self.hidden_dim
        self.sam_prompt_embed_dim = c
        self.sam_image_embedding_size = self.image_size // self.backbone_stride
        size = self.sam_image_embedding_size
        self.sam_prompt_encoder = PromptEncoder(
            embed_dim=c, image_embedding_size=(size, size),
            input_image_size=(self.image_size, self.image_size),
            mask_in_chans=16)
        self.sam_mask_decoder = MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=c,
                                          mlp_dim=2048, num_heads=8),
            transformer_dim=c, iou_head_depth=3, iou_head_hidden_dim=256,
            use_high_res_features=self.use_high_res_features_in_sam,
            iou_prediction_use_sigmoid=self.iou_prediction_use_sigmoid,
            pred_obj_scores=self.pred_obj_scores,
            pred_obj_scores_mlp=self.pred_obj_scores_mlp,
            use_multimask_token_for_obj_ptr=self.use_multimask_token_for_obj_ptr,
            **(self.sam_mask_decoder_extra_args or {}))
        if self.use_obj_ptrs_in_encoder:
            self.obj_ptr_proj = (MLP(c, c, c, 3) if self.use_mlp_for_obj_ptr_proj
                                 else nn.Linear(c, c))
        else:
            self.obj_ptr_proj = nn.Identity()
        self.obj_ptr_tpos_proj = (nn.Linear(c, self.mem_dim)
                                  if self.proj_tpos_enc_in_obj_ptrs
                                  else nn.Identity())

    def _init_extra_params(self) -> None:
        """Truncated-normal (std 0.02) init of the top-level embeddings, as
        the reference (skipped on the meta device)."""
        for p in (self.maskmem_tpos_enc, self.no_mem_embed, self.no_mem_pos_enc,
                  getattr(self, 'no_obj_ptr', None), self.no_obj_embed_spatial):
            if p is not None and not p.is_meta:
                nn.init.trunc_normal_(p, std=0.02)

    def set_trainable(self, trainable: Union[str, Sequence[str], None]
                      = ('sam_mask_decoder',)) -> None:
        """Set ``requires_grad``: True for parameters whose name starts with
        one of the given prefixes (``'all'`` for every parameter, None or
        ``()`` for none), False for the rest. The default trains only the
        mask decoder (Sa2VA's setting)."""
        if trainable == 'all':
            prefixes: Tuple[str, ...] = ('',)
        elif trainable is None:
            prefixes = ()
        elif isinstance(trainable, str):
            prefixes = (trainable,)
        else:
            prefixes = tuple(trainable)
        names = dict(self.named_parameters())
        for prefix in prefixes:
            if prefix and not any(n == prefix or n.startswith(prefix + '.')
                                  for n in names):
                raise ValueError(f'no parameter under {prefix!r}')
        for name, p in names.items():
            p.requires_grad_(any(prefix == '' or name == prefix
                                 or name.startswith(prefix + '.')
                                 for prefix in prefixes))

    # ---------------------------------------------------------- image path
    def forward_image(self, img_batch: Tensor) -> Dict[str, object]:
        """Image encoder.

        Args:
            img_batch: ``(B, 3, S, S)`` normalised float images
                (S = ``image_size``).

        Returns dict:
            ``vision_features`` ``(B, C, S/16, S/16)`` (C = hidden_dim 256),
            ``vision_pos_enc`` list of 3 ``(B, C, S/s, S/s)`` for s = 4, 8, 16,
            ``backbone_fpn`` list of 3: ``(B, C/8, S/4, S/4)`` (conv_s0
            applied), ``(B, C/4, S/8, S/8)`` (conv_s1 applied),
            ``(B, C, S/16, S/16)`` (= vision_features). Without high-res
            features the two finer levels are not projected.
        """
        out = self.image_encoder(img_batch)
        if self.use_high_res_features_in_sam:
            fpn = list(out['backbone_fpn'])
            fpn[0] = self.sam_mask_decoder.conv_s0(fpn[0])
            fpn[1] = self.sam_mask_decoder.conv_s1(fpn[1])
            out['backbone_fpn'] = fpn
        return out

    def prepare_backbone_features(self, backbone_out: Dict[str, object]):
        """Last ``num_feature_levels`` levels as sequence-first tensors.

        Returns (vision_feats, vision_pos_embeds, feat_sizes): two lists of
        ``(H_i*W_i, B, C_i)`` (row-major flatten) and the list of (H_i, W_i).
        """
        fpn, pos = backbone_out['backbone_fpn'], backbone_out['vision_pos_enc']
        if len(fpn) != len(pos) or len(fpn) < self.num_feature_levels:
            raise ValueError(f'backbone_out has {len(fpn)} levels / {len(pos)} '
                             f'encodings, need {self.num_feature_levels}')
        fpn = fpn[-self.num_feature_levels:]
        pos = pos[-self.num_feature_levels:]
        feat_sizes = [(x.shape[-2], x.shape[-1]) for x in pos]
        feats = [x.flatten(2).permute(2, 0, 1) for x in fpn]
        pos = [x.flatten(2).permute(2, 0, 1) for x in pos]
        return feats, pos, feat_sizes

    # ------------------------------------------------------------ SAM heads
    def _use_multimask(self, is_init_cond_frame: bool,
                       point_inputs: Optional[Dict]) -> bool:
        """Multimask output when there are ``multimask_min_pt_num`` to
        ``multimask_max_pt_num`` points, on the first conditioning frame or
        when tracking allows it."""
        n = 0 if point_inputs is None else point_inputs['point_labels'].size(1)
        return (self.multimask_output_in_sam
                and (is_init_cond_frame or self.multimask_output_for_tracking)
                and self.multimask_min_pt_num <= n <= self.multimask_max_pt_num)

    def decode_masks(self, backbone_features: Tensor,
                     high_res_features: Optional[List[Tensor]],
                     point_inputs: Optional[Dict] = None,
                     mask_inputs: Optional[Tensor] = None,
                     multimask_output: bool = False,
                     language_embd: Optional[Tensor] = None,
                     return_all: bool = False) -> Dict[str, Tensor]:
        """Prompt encoder + mask decoder, *without* object-score gating.

        Args:
            backbone_features: ``(B, C, h, w)`` image embedding (h = S / 16).
            high_res_features: ``[(B, C/8, 4h, 4w), (B, C/4, 2h, 2w)]`` or
                None when high-res features are off.
            point_inputs: dict ``point_coords`` ``(B, P, 2)`` pixels (x, y),
                ``point_labels`` ``(B, P)`` int; None -> one padding point.
            mask_inputs: ``(B, 1, H, W)`` mask prompt (logits or binary);
                resized (bilinear, antialias) to ``4h x 4w`` when needed.
            language_embd: ``(B, N, C)`` tokens appended after the sparse
                prompt tokens (Sa2VA's [SEG] embeddings), or None.
            return_all: also return the intermediate tensors.

        Returns dict: ``low_res_multimasks`` ``(B, M, 4h, 4w)``, ``ious``
        ``(B, M)``, ``sam_output_tokens`` ``(B, M', C)``,
        ``object_score_logits`` ``(B, 1)`` (M = 3 with multimask, else 1);
        with ``return_all`` also ``sparse_embeddings_before_concat``,
        ``sparse_embeddings``, ``dense_embeddings``, ``dense_pe``,
        ``twoway_queries_out``, ``twoway_keys_out``, ``all_masks``,
        ``all_ious``, ``all_mask_tokens_out``.
        """
        b = backbone_features.size(0)
        device = backbone_features.device
        size = self.sam_image_embedding_size
        if (backbone_features.size(1) != self.sam_prompt_embed_dim
                or backbone_features.shape[-2:] != (size, size)):
            raise ValueError(f'backbone_features {tuple(backbone_features.shape)}'
                             f' != (B, {self.sam_prompt_embed_dim}, {size}, '
                             f'{size})')
        if point_inputs is not None:
            coords = point_inputs['point_coords']
            labels = point_inputs['point_labels']
            if coords.size(0) != b or labels.size(0) != b:
                raise ValueError('point_inputs batch size differs from the '
                                 'image batch')
        else:
            coords = torch.zeros(b, 1, 2, device=device)
            labels = -torch.ones(b, 1, dtype=torch.int32, device=device)
        mask_prompt = None
        if mask_inputs is not None:
            if mask_inputs.ndim != 4 or mask_inputs.shape[:2] != (b, 1):
                raise ValueError(f'mask_inputs must be (B, 1, H, W), got '
                                 f'{tuple(mask_inputs.shape)}')
            target = self.sam_prompt_encoder.mask_input_size
            if tuple(mask_inputs.shape[-2:]) != target:
                mask_prompt = F.interpolate(mask_inputs.float(), size=target,
                                            mode='bilinear',
                                            align_corners=False, antialias=True)
            else:
                mask_prompt = mask_inputs
        sparse0, dense = self.sam_prompt_encoder(
            points=(coords, labels), boxes=None, masks=mask_prompt)
        sparse = sparse0
        if language_embd is not None:
            if (language_embd.ndim != 3 or language_embd.size(0) != b
                    or language_embd.size(2) != self.sam_prompt_embed_dim):
                raise ValueError(f'language_embd must be (B={b}, N, '
                                 f'{self.sam_prompt_embed_dim}), got '
                                 f'{tuple(language_embd.shape)}')
            sparse = torch.cat([sparse0.to(language_embd.dtype), language_embd],
                               dim=1)
        dense_pe = self.sam_prompt_encoder.get_dense_pe()
        decoder = self.sam_mask_decoder
        all_masks, all_ious, all_tokens, obj_logits, (hs, keys) = \
            decoder.predict_masks(backbone_features, dense_pe, sparse, dense,
                                  repeat_image=False,
                                  high_res_features=high_res_features,
                                  return_transformer_out=True)
        masks, ious, tokens = decoder.select_outputs(
            all_masks, all_ious, all_tokens, multimask_output)
        out = {'low_res_multimasks': masks, 'ious': ious,
               'sam_output_tokens': tokens, 'object_score_logits': obj_logits}
        if return_all:
            out.update(sparse_embeddings_before_concat=sparse0,
                       sparse_embeddings=sparse, dense_embeddings=dense,
                       dense_pe=dense_pe, twoway_queries_out=hs,
                       twoway_keys_out=keys, all_masks=all_masks,
                       all_ious=all_ious, all_mask_tokens_out=all_tokens)
        return out

    @staticmethod
    def _select_best(masks: Tensor, ious: Tensor) -> Tuple[Tensor, Tensor]:
        """Best-IoU mask ``(B, 1, H, W)`` of ``(B, M, H, W)`` and the
        indices ``(B,)`` int64."""
        best = torch.argmax(ious, dim=-1)
        rows = torch.arange(masks.shape[0], device=masks.device)
        return masks[rows, best].unsqueeze(1), best

    def forward_language_prompt(self, backbone_out: Dict[str, object],
                                language_embd: Tensor,
                                image_index: Optional[Tensor] = None
                                ) -> Dict[str, Tensor]:
        """Sa2VA's language-prompted mask head (the training path).

        The image embedding is the top-level feature plus ``no_mem_embed``
        (first conditioning frame, no memory); the prompt encoder gets no
        points (one padding point, plus the automatic second one) and no mask;
        ``language_embd`` is appended after those two sparse tokens; the
        decoder runs with multimask output (0 points lies in
        [multimask_min_pt_num, multimask_max_pt_num]) and the best-IoU mask is
        selected. No object-score gating.

        Args:
            backbone_out: :meth:`forward_image` output for ``B_img`` images.
            language_embd: ``(B, N, C)`` prompt tokens (C = hidden_dim 256;
                Sa2VA: N = 1 projected [SEG] hidden state per object).
            image_index: optional ``(B,)`` int64 index of each prompt row's
                image in the backbone batch (several objects per image);
                None means row b uses image b (``B == B_img``).

        Returns dict (h = S / 16; ``4h = 256`` for S = 1024):
            ``low_res_multimasks`` ``(B, 3, 4h, 4w)`` logits,
            ``ious`` ``(B, 3)`` predicted IoU (sigmoid),
            ``sam_output_tokens`` ``(B, 3, C)``,
            ``object_score_logits`` ``(B, 1)``,
            ``low_res_masks`` ``(B, 1, 4h, 4w)`` best-IoU mask logits,
            ``best_iou_inds`` ``(B,)`` int64.
            (With multimask output disabled by the config, M = 1 instead
            of 3.)
        """
        feats, _, feat_sizes = self.prepare_backbone_features(backbone_out)
        b_img = feats[-1].size(1)
        maps = [x.permute(1, 2, 0).reshape(b_img, x.size(2), *s)
                for x, s in zip(feats, feat_sizes)]
        pix_feat = maps[-1] + self.no_mem_embed.view(1, -1, 1, 1).to(
            maps[-1].dtype)
        high_res = maps[:-1] if len(maps) > 1 else None
        if image_index is not None:
            pix_feat = pix_feat.index_select(0, image_index)
            high_res = ([x.index_select(0, image_index) for x in high_res]
                        if high_res is not None else None)
        elif language_embd.size(0) != b_img:
            raise ValueError(f'{language_embd.size(0)} language prompts for '
                             f'{b_img} images; pass image_index')
        out = self.decode_masks(
            pix_feat, high_res, point_inputs=None, mask_inputs=None,
            multimask_output=self._use_multimask(True, None),
            language_embd=language_embd)
        out['low_res_masks'], out['best_iou_inds'] = self._select_best(
            out['low_res_multimasks'], out['ious'])
        return out

    def forward_sam_heads(self, backbone_features: Tensor,
                          point_inputs: Optional[Dict] = None,
                          mask_inputs: Optional[Tensor] = None,
                          high_res_features: Optional[List[Tensor]] = None,
                          multimask_output: bool = False,
                          language_embd: Optional[Tensor] = None
                          ) -> Dict[str, Tensor]:
        """The tracker's SAM head (reference ``_forward_sam_heads``):
        :meth:`decode_masks`, then masks set to -1024 where
        ``object_score_logits <= 0``, bilinear upsampling to S x S, best-IoU
        selection when multimask, and the object pointer (``obj_ptr_proj`` of
        the selected output token, replaced by ``no_obj_ptr`` where no object
        with ``fixed_no_obj_ptr``).

        Returns dict: ``low_res_multimasks`` ``(B, M, 4h, 4w)`` float32,
        ``high_res_multimasks`` ``(B, M, S, S)``, ``ious`` ``(B, M)``,
        ``low_res_masks`` ``(B, 1, 4h, 4w)``, ``high_res_masks``
        ``(B, 1, S, S)``, ``obj_ptr`` ``(B, C)``, ``object_score_logits``
        ``(B, 1)``.
        """
        out = self.decode_masks(backbone_features, high_res_features,
                                point_inputs, mask_inputs, multimask_output,
                                language_embd)
        masks, ious = out['low_res_multimasks'], out['ious']
        tokens, obj_logits = out['sam_output_tokens'], out['object_score_logits']
        is_obj = obj_logits > 0
        if self.pred_obj_scores:
            masks = torch.where(is_obj[:, None, None], masks,
                                masks.new_tensor(NO_OBJ_SCORE))
        masks = masks.float()
        high_res_multi = F.interpolate(masks, size=(self.image_size,) * 2,
                                       mode='bilinear', align_corners=False)
        token = tokens[:, 0]
        if multimask_output:
            low_res, best = self._select_best(masks, ious)
            rows = torch.arange(masks.shape[0], device=masks.device)
            high_res = high_res_multi[rows, best].unsqueeze(1)
            if tokens.size(1) > 1:
                token = tokens[rows, best]
        else:
            low_res, high_res = masks, high_res_multi
        obj_ptr = self.obj_ptr_proj(token)
        if self.pred_obj_scores:
            obj_ptr = self._gate_obj_ptr(obj_ptr, obj_logits.sigmoid()
                                         if self.soft_no_obj_ptr
                                         else is_obj.float())
        return {'low_res_multimasks': masks, 'high_res_multimasks': high_res_multi,
                'ious': ious, 'low_res_masks': low_res,
                'high_res_masks': high_res, 'obj_ptr': obj_ptr,
                'object_score_logits': obj_logits}

    def _gate_obj_ptr(self, obj_ptr: Tensor, lam: Tensor) -> Tensor:
        """Blend ``obj_ptr`` ``(B, C)`` towards ``no_obj_ptr`` by ``1 - lam``
        ``(B, 1)`` (pointer also scaled by lam with fixed_no_obj_ptr)."""
        lam = lam.to(obj_ptr.dtype)
        if self.fixed_no_obj_ptr:
            obj_ptr = lam * obj_ptr
        return obj_ptr + (1 - lam) * self.no_obj_ptr.to(obj_ptr.dtype)

    def _use_mask_as_output(self, backbone_features: Tensor,
                            high_res_features: Optional[List[Tensor]],
                            mask_inputs: Tensor) -> Dict[str, Tensor]:
        """A mask input ``(B, 1, S, S)`` (binary) used directly as the output
        (logits +-10), with an object pointer from the SAM head prompted by
        the downsampled mask."""
        scale, bias = 20.0, -10.0
        mask_f = mask_inputs.float()
        high_res = mask_f * scale + bias
        low_res = F.interpolate(high_res, size=(high_res.size(-2) // 4,
                                                high_res.size(-1) // 4),
                                mode='bilinear', align_corners=False,
                                antialias=True)
        ious = mask_inputs.new_ones(mask_inputs.size(0), 1).float()
        if not self.use_obj_ptrs_in_encoder:
            obj_ptr = torch.zeros(mask_inputs.size(0), self.hidden_dim,
                                  device=mask_inputs.device)
        else:
            obj_ptr = self.forward_sam_heads(
                backbone_features,
                mask_inputs=self.mask_downsample(
                    mask_f.to(self.mask_downsample.weight.dtype)),
                high_res_features=high_res_features)['obj_ptr']
        is_obj = torch.any(mask_inputs.flatten(1).float() > 0.0, dim=1)[..., None]
        lam = is_obj.float()
        obj_logits = scale * lam + bias
        if self.pred_obj_scores:
            obj_ptr = self._gate_obj_ptr(obj_ptr, lam)
        return {'low_res_multimasks': low_res, 'high_res_multimasks': high_res,
                'ious': ious, 'low_res_masks': low_res,
                'high_res_masks': high_res, 'obj_ptr': obj_ptr,
                'object_score_logits': obj_logits}

    # ------------------------------------------------------------ memory path
    def _prepare_memory_conditioned_features(
            self, frame_idx: int, is_init_cond_frame: bool,
            current_vision_feats: List[Tensor],
            current_vision_pos_embeds: List[Tensor],
            feat_sizes: List[Tuple[int, int]], output_dict: Dict,
            num_frames: int, track_in_reverse: bool = False) -> Tensor:
        """Top-level features ``(B, C, h, w)`` of the current frame, conditioned
        on the memory bank in ``output_dict`` (``cond_frame_outputs`` /
        ``non_cond_frame_outputs``: frame index -> track_step output); on the
        initial conditioning frame, the features plus ``no_mem_embed``."""
        b = current_vision_feats[-1].size(1)
        c = self.hidden_dim
        h, w = feat_sizes[-1]
        device = current_vision_feats[-1].device
        if self.num_maskmem == 0:
            return current_vision_feats[-1].permute(1, 2, 0).reshape(b, c, h, w)
        num_obj_ptr_tokens = 0
        tpos_sign = -1 if track_in_reverse else 1
        if not is_init_cond_frame:
            to_cat_memory, to_cat_pos = [], []
            cond_outputs = output_dict['cond_frame_outputs']
            if not cond_outputs:
                raise ValueError('tracking a non-conditioning frame needs at '
                                 'least one conditioning frame')
            selected, unselected = select_closest_cond_frames(
                frame_idx, cond_outputs, self.max_cond_frames_in_attn)
            t_pos_and_prevs = [(0, out) for out in selected.values()]
            r = 1 if self.training else self.memory_temporal_stride_for_eval
            for t_pos in range(1, self.num_maskmem):
                t_rel = self.num_maskmem - t_pos
                if t_rel == 1:
                    prev = frame_idx + t_rel if track_in_reverse else \
                        frame_idx - t_rel
                elif not track_in_reverse:
                    prev = ((frame_idx - 2) // r) * r - (t_rel - 2) * r
                else:
                    prev = -(-(frame_idx + 2) // r) * r + (t_rel - 2) * r
                out = output_dict['non_cond_frame_outputs'].get(prev)
                if out is None:
                    out = unselected.get(prev)
                t_pos_and_prevs.append((t_pos, out))
            for t_pos, prev in t_pos_and_prevs:
                if prev is None:
                    continue
                feats = prev['maskmem_features'].to(device)
                to_cat_memory.append(feats.flatten(2).permute(2, 0, 1))
                enc = prev['maskmem_pos_enc'][-1].to(device)
                enc = enc.flatten(2).permute(2, 0, 1)
                to_cat_pos.append(
                    enc + self.maskmem_tpos_enc[self.num_maskmem - t_pos - 1])

            if self.use_obj_ptrs_in_encoder:
                max_ptrs = min(num_frames, self.max_obj_ptrs_in_encoder)
                if not self.training and self.only_obj_ptrs_in_the_past_for_eval:
                    ptr_cond = {t: out for t, out in selected.items()
                                if (t >= frame_idx if track_in_reverse
                                    else t <= frame_idx)}
                else:
                    ptr_cond = selected
                pos_and_ptrs = [
                    ((frame_idx - t) * tpos_sign
                     if self.use_signed_tpos_enc_to_obj_ptrs
                     else abs(frame_idx - t), out['obj_ptr'])
                    for t, out in ptr_cond.items()]
                for t_diff in range(1, max_ptrs):
                    t = frame_idx + t_diff if track_in_reverse else \
                        frame_idx - t_diff
                    if t < 0 or (num_frames is not None and t >= num_frames):
                        break
                    out = output_dict['non_cond_frame_outputs'].get(
                        t, unselected.get(t))
                    if out is not None:
                        pos_and_ptrs.append((t_diff, out['obj_ptr']))
                if pos_and_ptrs:
                    pos_list, ptrs = zip(*pos_and_ptrs)
                    obj_ptrs = torch.stack(ptrs, dim=0)          # (N, B, C)
                    if self.add_tpos_enc_to_obj_ptrs:
                        t_diff_max = max_ptrs - 1
                        tpos_dim = c if self.proj_tpos_enc_in_obj_ptrs \
                            else self.mem_dim
                        obj_pos = torch.tensor(pos_list, device=device)
                        obj_pos = get_1d_sine_pe(obj_pos / t_diff_max,
                                                 dim=tpos_dim)
                        obj_pos = self.obj_ptr_tpos_proj(
                            obj_pos.to(obj_ptrs.dtype))
                        obj_pos = obj_pos.unsqueeze(1).expand(-1, b,
                                                              self.mem_dim)
                    else:
                        obj_pos = obj_ptrs.new_zeros(len(pos_list), b,
                                                     self.mem_dim)
                    if self.mem_dim < c:
                        # split each C-dim pointer into C / mem_dim tokens
                        obj_ptrs = obj_ptrs.reshape(-1, b, c // self.mem_dim,
                                                    self.mem_dim)
                        obj_ptrs = obj_ptrs.permute(0, 2, 1, 3).flatten(0, 1)
                        obj_pos = obj_pos.repeat_interleave(c // self.mem_dim,
                                                            dim=0)
                    to_cat_memory.append(obj_ptrs)
                    to_cat_pos.append(obj_pos)
                    num_obj_ptr_tokens = obj_ptrs.shape[0]
        else:
            if self.directly_add_no_mem_embed:
                feat = current_vision_feats[-1] + self.no_mem_embed
                return feat.permute(1, 2, 0).reshape(b, c, h, w)
            to_cat_memory = [self.no_mem_embed.expand(1, b, self.mem_dim)]
            to_cat_pos = [self.no_mem_pos_enc.expand(1, b, self.mem_dim)]

        memory = torch.cat(to_cat_memory, dim=0)
        memory_pos = torch.cat(to_cat_pos, dim=0)
        feat = self.memory_attention(
            curr=current_vision_feats[-1], curr_pos=current_vision_pos_embeds[-1],
            memory=memory, memory_pos=memory_pos,
            num_obj_ptr_tokens=num_obj_ptr_tokens)
        return feat.permute(1, 2, 0).reshape(b, c, h, w)

    def _encode_new_memory(self, current_vision_feats: List[Tensor],
                           feat_sizes: List[Tuple[int, int]],
                           pred_masks_high_res: Tensor,
                           object_score_logits: Tensor,
                           is_mask_from_pts: bool) -> Tuple[Tensor, List[Tensor]]:
        """Memory features ``(B, mem_dim, h, w)`` and position encodings
        ``[(B, mem_dim, h, w)]`` of the current frame from its (un-conditioned)
        top-level features and high-res mask logits ``(B, 1, S, S)``."""
        b = current_vision_feats[-1].size(1)
        h, w = feat_sizes[-1]
        pix_feat = current_vision_feats[-1].permute(1, 2, 0).reshape(
            b, self.hidden_dim, h, w)
        if self.non_overlap_masks_for_mem_enc and not self.training:
            pred_masks_high_res = self._apply_non_overlapping_constraints(
                pred_masks_high_res)
        if (self.binarize_mask_from_pts_for_mem_enc and is_mask_from_pts
                and not self.training):
            mask_for_mem = (pred_masks_high_res > 0).float()
        else:
            mask_for_mem = torch.sigmoid(pred_masks_high_res)
        if self.sigmoid_scale_for_mem_enc != 1.0:
            mask_for_mem = mask_for_mem * self.sigmoid_scale_for_mem_enc
        if self.sigmoid_bias_for_mem_enc != 0.0:
            mask_for_mem = mask_for_mem + self.sigmoid_bias_for_mem_enc
        out = self.memory_encoder(pix_feat, mask_for_mem.to(pix_feat.dtype),
                                  skip_mask_sigmoid=True)
        features, pos_enc = out['vision_features'], out['vision_pos_enc']
        if self.no_obj_embed_spatial is not None:
            no_obj = 1 - (object_score_logits > 0).to(features.dtype)
            features = features + no_obj[..., None, None] * \
                self.no_obj_embed_spatial[..., None, None].to(features.dtype)
        return features, pos_enc

    @staticmethod
    def _apply_non_overlapping_constraints(pred_masks: Tensor) -> Tensor:
        """Keep each pixel only in the object (batch row) with the highest
        logit; others are clamped to at most -10. ``(B, 1, H, W)``."""
        if pred_masks.size(0) == 1:
            return pred_masks
        best = torch.argmax(pred_masks, dim=0, keepdim=True)
        rows = torch.arange(pred_masks.size(0), device=pred_masks.device)
        keep = best == rows[:, None, None, None]
        return torch.where(keep, pred_masks, torch.clamp(pred_masks, max=-10.0))

    def track_step(self, frame_idx: int, is_init_cond_frame: bool,
                   current_vision_feats: List[Tensor],
                   current_vision_pos_embeds: List[Tensor],
                   feat_sizes: List[Tuple[int, int]],
                   point_inputs: Optional[Dict], mask_inputs: Optional[Tensor],
                   output_dict: Dict, num_frames: int,
                   track_in_reverse: bool = False,
                   run_mem_encoder: bool = True,
                   prev_sam_mask_logits: Optional[Tensor] = None,
                   language_embd: Optional[Tensor] = None) -> Dict[str, object]:
        """One tracking step on one frame (reference ``track_step``).

        Args:
            frame_idx: index of the frame in the video.
            is_init_cond_frame: the first prompted frame (no memory yet).
            current_vision_feats / current_vision_pos_embeds / feat_sizes:
                :meth:`prepare_backbone_features` of this frame (``B`` objects).
            point_inputs: dict of ``point_coords`` ``(B, P, 2)`` pixels and
                ``point_labels`` ``(B, P)``, or None.
            mask_inputs: ``(B, 1, S, S)`` binary mask prompt, or None. With
                ``use_mask_input_as_output_without_sam`` it is the output.
            output_dict: memory bank, ``{'cond_frame_outputs': {t: out},
                'non_cond_frame_outputs': {t: out}}`` of earlier outputs.
            num_frames: length of the video.
            language_embd: ``(B, N, C)`` extra prompt tokens (Sa2VA), or None.

        Returns dict: ``point_inputs``, ``mask_inputs``, ``pred_masks``
        ``(B, 1, S/4, S/4)`` and ``pred_masks_high_res`` ``(B, 1, S, S)`` logits
        (-1024 where no object), ``obj_ptr`` ``(B, C)``,
        ``object_score_logits`` ``(B, 1)``, ``maskmem_features``
        ``(B, mem_dim, h, w)`` and ``maskmem_pos_enc`` list (None without the
        memory encoder run).
        """
        current_out = {'point_inputs': point_inputs, 'mask_inputs': mask_inputs}
        b = current_vision_feats[-1].size(1)
        if len(current_vision_feats) > 1:
            high_res = [x.permute(1, 2, 0).reshape(b, x.size(2), *s)
                        for x, s in zip(current_vision_feats[:-1],
                                        feat_sizes[:-1])]
        else:
            high_res = None
        if mask_inputs is not None and self.use_mask_input_as_output_without_sam:
            pix_feat = current_vision_feats[-1].permute(1, 2, 0).reshape(
                b, self.hidden_dim, *feat_sizes[-1])
            sam_out = self._use_mask_as_output(pix_feat, high_res, mask_inputs)
        else:
            pix_feat = self._prepare_memory_conditioned_features(
                frame_idx, is_init_cond_frame, current_vision_feats,
                current_vision_pos_embeds, feat_sizes, output_dict, num_frames,
                track_in_reverse)
            if prev_sam_mask_logits is not None:
                if point_inputs is None or mask_inputs is not None:
                    raise ValueError('prev_sam_mask_logits needs point inputs '
                                     'and no mask inputs')
                mask_inputs = prev_sam_mask_logits
            sam_out = self.forward_sam_heads(
                pix_feat, point_inputs=point_inputs, mask_inputs=mask_inputs,
                high_res_features=high_res,
                multimask_output=self._use_multimask(is_init_cond_frame,
                                                     point_inputs),
                language_embd=language_embd)
        current_out['pred_masks'] = sam_out['low_res_masks']
        current_out['pred_masks_high_res'] = sam_out['high_res_masks']
        current_out['obj_ptr'] = sam_out['obj_ptr']
        current_out['object_score_logits'] = sam_out['object_score_logits']
        if run_mem_encoder and self.num_maskmem > 0:
            feats, pos = self._encode_new_memory(
                current_vision_feats, feat_sizes, sam_out['high_res_masks'],
                sam_out['object_score_logits'],
                is_mask_from_pts=point_inputs is not None)
            current_out['maskmem_features'] = feats
            current_out['maskmem_pos_enc'] = pos
        else:
            current_out['maskmem_features'] = None
            current_out['maskmem_pos_enc'] = None
        return current_out

    @torch.no_grad()
    def propagate(self, backbone_outs: Sequence[Dict[str, object]],
                  init_mask: Optional[Tensor] = None,
                  language_embd: Optional[Tensor] = None) -> List[Dict]:
        """Track objects through a clip prompted on frame 0 (eval helper).

        Args:
            backbone_outs: :meth:`forward_image` output of every frame, each
                with batch size B (one row per object; repeat the frame).
            init_mask: ``(B, 1, S, S)`` binary mask prompt of frame 0, or None.
            language_embd: ``(B, N, C)`` prompt tokens for frame 0 (Sa2VA's
                language-prompted tracking), or None. One of the two.

        Returns the list of :meth:`track_step` outputs, frame by frame.
        """
        if (init_mask is None) == (language_embd is None):
            raise ValueError('give exactly one of init_mask / language_embd')
        output_dict = {'cond_frame_outputs': {}, 'non_cond_frame_outputs': {}}
        outs = []
        n = len(backbone_outs)
        for t, backbone_out in enumerate(backbone_outs):
            feats, pos, sizes = self.prepare_backbone_features(backbone_out)
            first = t == 0
            out = self.track_step(
                t, first, feats, pos, sizes, point_inputs=None,
                mask_inputs=init_mask if first else None,
                output_dict=output_dict, num_frames=n,
                language_embd=language_embd if first else None)
            key = 'cond_frame_outputs' if first else 'non_cond_frame_outputs'
            output_dict[key][t] = out
            outs.append(out)
        return outs

    def forward(self, *args, **kwargs):
        raise NotImplementedError(
            'SAM2Base has no single forward; call forward_image, then '
            'forward_language_prompt (training) or track_step / propagate')
