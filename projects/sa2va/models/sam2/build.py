"""Build SAM2 from a preset name or an official-yaml ``model:`` dict, and
load official checkpoints with strict key accounting."""
import os
from typing import Dict, Optional, Sequence, Union

import torch
from torch import Tensor

from projects.sa2va.registry import MODELS

from .common import check_kwargs
from .hiera import Hiera
from .memory_attention import MemoryAttention, MemoryAttentionLayer
from .memory_encoder import CXBlock, Fuser, MaskDownSampler, MemoryEncoder
from .neck import FpnNeck, ImageEncoder
from .position_encoding import PositionEmbeddingSine
from .presets import preset_config
from .sam2_base import SAM2Base
from .transformer import RoPEAttention


def _sub(cfg: dict, key: str, where: str) -> dict:
    if key not in cfg or not isinstance(cfg[key], dict):
        raise ValueError(f'{where}: missing section {key!r}')
    return cfg[key]


def _build_image_encoder(cfg: dict) -> ImageEncoder:
    cfg = check_kwargs(ImageEncoder, cfg, 'image_encoder')
    trunk = Hiera(**check_kwargs(Hiera, _sub(cfg, 'trunk', 'image_encoder'),
                                 'image_encoder.trunk'))
    neck_cfg = check_kwargs(FpnNeck, _sub(cfg, 'neck', 'image_encoder'),
                            'image_encoder.neck')
    pe = PositionEmbeddingSine(**check_kwargs(
        PositionEmbeddingSine, _sub(neck_cfg, 'position_encoding', 'neck'),
        'image_encoder.neck.position_encoding'))
    neck = FpnNeck(**dict(neck_cfg, position_encoding=pe))
    return ImageEncoder(trunk, neck, **{k: v for k, v in cfg.items()
                                        if k not in ('trunk', 'neck')})


def _build_memory_attention(cfg: dict) -> MemoryAttention:
    where = 'memory_attention'
    cfg = {k: v for k, v in cfg.items() if k != '_target_'}
    layer_cfg = check_kwargs(MemoryAttentionLayer, _sub(cfg, 'layer', where),
                             where + '.layer')
    sa_cfg = check_kwargs(RoPEAttention, _sub(layer_cfg, 'self_attention',
                                              where + '.layer'),
                          where + '.layer.self_attention')
    ca_cfg = check_kwargs(RoPEAttention, _sub(layer_cfg, 'cross_attention',
                                              where + '.layer'),
                          where + '.layer.cross_attention')

    def make_layer() -> MemoryAttentionLayer:
        return MemoryAttentionLayer(**dict(
            layer_cfg, self_attention=RoPEAttention(**sa_cfg),
            cross_attention=RoPEAttention(**ca_cfg)))

    rest = {k: v for k, v in cfg.items() if k != 'layer'}
    check_kwargs(MemoryAttention, rest, where)
    return MemoryAttention(layer_factory=make_layer, **rest)


def _build_memory_encoder(cfg: dict) -> MemoryEncoder:
    where = 'memory_encoder'
    cfg = check_kwargs(MemoryEncoder, cfg, where)
    ds = MaskDownSampler(**check_kwargs(
        MaskDownSampler, _sub(cfg, 'mask_downsampler', where),
        where + '.mask_downsampler'))
    fuser_cfg = {k: v for k, v in _sub(cfg, 'fuser', where).items()
                 if k != '_target_'}
    layer_cfg = check_kwargs(CXBlock, _sub(fuser_cfg, 'layer', where + '.fuser'),
                             where + '.fuser.layer')
    fuser_rest = {k: v for k, v in fuser_cfg.items() if k != 'layer'}
    check_kwargs(Fuser, fuser_rest, where + '.fuser')
    fuser = Fuser(layer_cfg, **fuser_rest)
    pe = PositionEmbeddingSine(**check_kwargs(
        PositionEmbeddingSine, _sub(cfg, 'position_encoding', where),
        where + '.position_encoding'))
    rest = {k: v for k, v in cfg.items()
            if k not in ('mask_downsampler', 'fuser', 'position_encoding')}
    return MemoryEncoder(mask_downsampler=ds, fuser=fuser, position_encoding=pe,
                         **rest)


def build_sam2_model(config: dict) -> SAM2Base:
    """Instantiate :class:`SAM2Base` from a nested dict with the structure of
    the official yaml ``model:`` section (``_target_`` entries ignored) on
    the current default device (use ``with torch.device('meta'):`` for a
    weightless model). Unknown keys raise ``ValueError`` naming them."""
    if 'model' in config and 'image_encoder' not in config:
        config = config['model']
    cfg = {k: v for k, v in config.items() if k != '_target_'}
    image_encoder = _build_image_encoder(_sub(cfg, 'image_encoder', 'model'))
    memory_attention = _build_memory_attention(
        _sub(cfg, 'memory_attention', 'model'))
    memory_encoder = _build_memory_encoder(_sub(cfg, 'memory_encoder', 'model'))
    rest = {k: v for k, v in cfg.items() if k not in
            ('image_encoder', 'memory_attention', 'memory_encoder')}
    check_kwargs(SAM2Base, rest, 'model')
    return SAM2Base(image_encoder=image_encoder,
                    memory_attention=memory_attention,
                    memory_encoder=memory_encoder, **rest)


def read_state_dict(path: Union[str, os.PathLike]) -> Dict[str, Tensor]:
    """Flat ``{key: tensor}`` of a checkpoint: a safetensors file, or a
    ``.pt`` holding ``{'model': state_dict}`` (the official layout) or a bare
    state dict. Raises ``ValueError`` for anything else."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        from ...downloads import missing_message
        raise FileNotFoundError(missing_message(path, 'SAM2 checkpoint'))
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        return load_file(path)
    from projects.sa2va.engine.checkpoint import safe_torch_load
    obj = safe_torch_load(path)  # weights-only, errors name the file
    if isinstance(obj, dict) and isinstance(obj.get('model'), dict):
        obj = obj['model']
    if not isinstance(obj, dict) or not all(
            isinstance(v, Tensor) for v in obj.values()):
        keys = sorted(obj)[:10] if isinstance(obj, dict) else type(obj)
        raise ValueError(f'{path}: expected {{"model": state_dict}} or a state '
                         f'dict of tensors, found {keys}')
    return obj


def _names(keys, limit: int = 20) -> str:
    keys = sorted(keys)
    more = f' ... (+{len(keys) - limit} more)' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def load_sam2_state_dict(model: SAM2Base, state_dict: Dict[str, Tensor]
                         ) -> None:
    """Strictly load ``state_dict`` into ``model`` (on the meta device the
    tensors are assigned, not copied). Raises ``ValueError`` naming every
    missing, unexpected and mis-shaped key (the persistent buffer
    ``sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix``
    included) before anything is loaded."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = set(expected) - set(state_dict)
    unexpected = set(state_dict) - set(expected)
    misshaped = [f'{k}: checkpoint {tuple(state_dict[k].shape)} vs model '
                 f'{expected[k]}' for k in sorted(set(expected) & set(state_dict))
                 if tuple(state_dict[k].shape) != expected[k]]
    errors = []
    if missing:
        errors.append(f'missing keys ({len(missing)}): {_names(missing)}')
    if unexpected:
        errors.append(f'unexpected keys ({len(unexpected)}): '
                      f'{_names(unexpected)}')
    if misshaped:
        errors.append(f'mis-shaped keys ({len(misshaped)}): '
                      + '; '.join(misshaped[:20]))
    if errors:
        raise ValueError('SAM2 checkpoint does not match the model: '
                         + ' | '.join(errors))
    is_meta = any(t.is_meta for t in model.state_dict().values())
    model.load_state_dict(state_dict, strict=True, assign=is_meta)


def build_sam2(config: Union[str, dict], checkpoint: Optional[str] = None, *,
               device: Union[str, torch.device, None] = None,
               trainable: Union[str, Sequence[str], None] = ('sam_mask_decoder',)
               ) -> SAM2Base:
    """Build a SAM2 / SAM2.1 model and optionally load an official checkpoint.

    Args:
        config: a preset name (``'sam2_hiera_t'``, ``'sam2_hiera_s'``,
            ``'sam2_hiera_b+'``, ``'sam2_hiera_l'`` and the same with
            ``sam2.1``) or a nested dict with the structure and field names of
            the official yaml ``model:`` section (``_target_`` ignored; a dict
            with a top-level ``model`` key is accepted too).
        checkpoint: official ``.pt`` (``{'model': state_dict}``) or a
            safetensors file; loaded strictly (see
            :func:`load_sam2_state_dict`). The model is then built on the
            meta device and the weights assigned (no random init).
        device: where to put the model (default CPU; ``'meta'`` for a
            weightless model without checkpoint).
        trainable: parameter-name prefixes left trainable
            (:meth:`SAM2Base.set_trainable`); default: the mask decoder only.

    Returns the model in eval mode, float32 (the checkpoint's dtype).
    """
    cfg = preset_config(config) if isinstance(config, str) else config
    device = torch.device('cpu' if device is None else device)
    if checkpoint is not None:
        with torch.device('meta'):
            model = build_sam2_model(cfg)
        load_sam2_state_dict(model, read_state_dict(checkpoint))
        if device.type != 'meta':
            model = model.to(device)
    else:
        with torch.device(device):
            model = build_sam2_model(cfg)
    model.set_trainable(trainable)
    return model.eval()


MODELS.register_module(name='SAM2', module=build_sam2)
