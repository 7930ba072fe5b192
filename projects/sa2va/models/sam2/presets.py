"""Hyper-parameters of the eight official SAM2 / SAM2.1 configs, as data.

Each preset is the resolved ``model:`` section of the official yaml
(``configs/sam2/sam2_hiera_*.yaml`` and ``configs/sam2.1/sam2.1_hiera_*.yaml``)
without the ``_target_`` entries; keys absent from a yaml (e.g. the b+ trunk
stages) are absent here too and take the constructor defaults.
"""
import copy
from typing import Dict

# Shared by every official config.
_NECK = {
    'position_encoding': {'num_pos_feats': 256, 'normalize': True,
                          'scale': None, 'temperature': 10000},
    'd_model': 256,
    'fpn_top_down_levels': [2, 3],
    'fpn_interp_model': 'nearest',
}

_ROPE_ATTENTION = {'rope_theta': 10000.0, 'feat_sizes': [64, 64],
                   'embedding_dim': 256, 'num_heads': 1, 'downsample_rate': 1,
                   'dropout': 0.1}

_MEMORY_ATTENTION = {
    'd_model': 256,
    'pos_enc_at_input': True,
    'layer': {
        'activation': 'relu',
        'dim_feedforward': 2048,
        'dropout': 0.1,
        'pos_enc_at_attn': False,
        'self_attention': dict(_ROPE_ATTENTION),
        'd_model': 256,
        'pos_enc_at_cross_attn_keys': True,
        'pos_enc_at_cross_attn_queries': False,
        'cross_attention': dict(_ROPE_ATTENTION, rope_k_repeat=True,
                                kv_in_dim=64),
    },
    'num_layers': 4,
}

_MEMORY_ENCODER = {
    'out_dim': 64,
    'position_encoding': {'num_pos_feats': 64, 'normalize': True,
                          'scale': None, 'temperature': 10000},
    'mask_downsampler': {'kernel_size': 3, 'stride': 2, 'padding': 1},
    'fuser': {'layer': {'dim': 256, 'kernel_size': 7, 'padding': 3,
                        'layer_scale_init_value': 1e-06, 'use_dwconv': True},
              'num_layers': 2},
}

_FLAGS_HEAD = {
    'num_maskmem': 7,
    'image_size': 1024,
    'sigmoid_scale_for_mem_enc': 20.0,
    'sigmoid_bias_for_mem_enc': -10.0,
    'use_mask_input_as_output_without_sam': True,
    'directly_add_no_mem_embed': True,
}
# SAM2.1 adds these four; SAM2 sets add_tpos_enc_to_obj_ptrs False (later
# in the yaml) and leaves the other three at their False defaults.
_FLAGS_SAM21 = {'no_obj_embed_spatial': True}
_FLAGS_MID = {
    'use_high_res_features_in_sam': True,
    'multimask_output_in_sam': True,
    'iou_prediction_use_sigmoid': True,
    'use_obj_ptrs_in_encoder': True,
}
_TPOS_SAM21 = {'add_tpos_enc_to_obj_ptrs': True,
               'proj_tpos_enc_in_obj_ptrs': True,
               'use_signed_tpos_enc_to_obj_ptrs': True}
_TPOS_SAM2 = {'add_tpos_enc_to_obj_ptrs': False}
_FLAGS_TAIL = {
    'only_obj_ptrs_in_the_past_for_eval': True,
    'pred_obj_scores': True,
    'pred_obj_scores_mlp': True,
    'fixed_no_obj_ptr': True,
    'multimask_output_for_tracking': True,
    'use_multimask_token_for_obj_ptr': True,
    'multimask_min_pt_num': 0,
    'multimask_max_pt_num': 1,
    'use_mlp_for_obj_ptr_proj': True,
    'compile_image_encoder': False,
}

# Per-size trunk settings (only the keys each yaml sets) and the neck's
# backbone_channel_list (trunk output channels, coarsest first).
_SIZES = {
    't': ({'embed_dim': 96, 'num_heads': 1, 'stages': [1, 2, 7, 2],
           'global_att_blocks': [5, 7, 9],
           'window_pos_embed_bkg_spatial_size': [7, 7]},
          [768, 384, 192, 96]),
    's': ({'embed_dim': 96, 'num_heads': 1, 'stages': [1, 2, 11, 2],
           'global_att_blocks': [7, 10, 13],
           'window_pos_embed_bkg_spatial_size': [7, 7]},
          [768, 384, 192, 96]),
    'b+': ({'embed_dim': 112, 'num_heads': 2},
           [896, 448, 224, 112]),
    'l': ({'embed_dim': 144, 'num_heads': 2, 'stages': [2, 6, 36, 4],
           'global_att_blocks': [23, 33, 43],
           'window_pos_embed_bkg_spatial_size': [7, 7],
           'window_spec': [8, 4, 16, 8]},
          [1152, 576, 288, 144]),
}

CHECKPOINT_FILES = {
    'sam2_hiera_t': 'sam2_hiera_tiny.pt',
    'sam2_hiera_s': 'sam2_hiera_small.pt',
    'sam2_hiera_b+': 'sam2_hiera_base_plus.pt',
    'sam2_hiera_l': 'sam2_hiera_large.pt',
    'sam2.1_hiera_t': 'sam2.1_hiera_tiny.pt',
    'sam2.1_hiera_s': 'sam2.1_hiera_small.pt',
    'sam2.1_hiera_b+': 'sam2.1_hiera_base_plus.pt',
    'sam2.1_hiera_l': 'sam2.1_hiera_large.pt',
}


def _make(size: str, sam21: bool) -> Dict:
    trunk, channels = _SIZES[size]
    return {
        'image_encoder': {
            'scalp': 1,
            'trunk': dict(trunk),
            'neck': dict(_NECK, backbone_channel_list=list(channels)),
        },
        'memory_attention': _MEMORY_ATTENTION,
        'memory_encoder': _MEMORY_ENCODER,
        **_FLAGS_HEAD,
        **(_FLAGS_SAM21 if sam21 else {}),
        **_FLAGS_MID,
        **(_TPOS_SAM21 if sam21 else _TPOS_SAM2),
        **_FLAGS_TAIL,
    }


PRESETS: Dict[str, Dict] = {
    f'{family}_hiera_{size}': _make(size, family == 'sam2.1')
    for family in ('sam2', 'sam2.1') for size in ('t', 's', 'b+', 'l')}


def preset_config(name: str) -> Dict:
    """A deep copy of preset ``name`` (one of :data:`PRESETS`); raises
    ``KeyError`` listing the known names."""
    if name not in PRESETS:
        raise KeyError(f'unknown SAM2 preset {name!r}; known: '
                       f'{sorted(PRESETS)}')
    return copy.deepcopy(PRESETS[name])
