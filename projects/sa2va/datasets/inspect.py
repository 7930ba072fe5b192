"""Helpers of the data tools (check_data, browse_dataset): walk the datasets
of a config and check or render their samples."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..transforms.base import RecordError


def build_dataset_from_config(cfg, key: str = 'train_dataloader'):
    """The dataset of ``cfg[key].dataset`` built in the ``sa2va`` scope."""
    from mmengine.registry import init_default_scope

    from ..registry import DATASETS
    init_default_scope(cfg.get('default_scope', 'sa2va'))
    if key not in cfg:
        raise KeyError(f'the config has no {key!r}')
    return DATASETS.build(cfg[key]['dataset'])


def leaf_datasets(dataset) -> list:
    """The family datasets inside (nested) mixes, each once, in order."""
    if hasattr(dataset, 'datasets'):
        out, seen = [], set()
        for d in dataset.datasets:
            for leaf in leaf_datasets(d):
                if id(leaf) not in seen:
                    seen.add(id(leaf))
                    out.append(leaf)
        return out
    return [dataset]


def find_encoder(dataset):
    """The ConversationEncoder of a dataset's pipeline (None if none)."""
    from ..transforms.formatting import EncodeConversation
    for t in getattr(dataset.pipeline, 'transforms', []):
        if isinstance(t, EncodeConversation):
            return t.encoder
    return None


@dataclass
class DatasetReport:
    """What check_data found in one dataset."""
    name: str
    records: int = 0
    checked: int = 0
    ok: int = 0
    problems: Counter = field(default_factory=Counter)
    examples: list = field(default_factory=list)
    stats: Counter = field(default_factory=Counter)

    @property
    def errors(self) -> int:
        return sum(self.problems.values())


def check_dataset(dataset, limit: int | None = None,
                  max_examples: int = 5) -> DatasetReport:
    """Run every record of ``dataset`` through its pipeline, without the
    skipping of ``__getitem__``: each failing record is counted by reason
    (``missing_image``, ``bad_mask``, ``empty_mask``, ``too_long``, ...) and
    the first ``max_examples`` are named."""
    name = getattr(dataset, 'dataset_name', type(dataset).__name__)
    report = DatasetReport(name=name, records=len(dataset))
    n = len(dataset) if limit is None else min(limit, len(dataset))
    for idx in range(n):
        report.checked += 1
        try:
            sample = dataset.prepare_data(idx)
        except RecordError as exc:
            report.problems[exc.reason] += 1
            if len(report.examples) < max_examples:
                report.examples.append(
                    f'{dataset.describe_record(idx)}: {exc.reason}: {exc}')
            continue
        report.ok += 1
        for k, v in (sample.get('data_stats') or {}).items():
            report.stats[k] += int(v)
    return report


_COLORS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
           (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230)]


def _to_uint8_image(tile):
    """``(3, s, s)`` uint8 or ImageNet-normalised float -> ``(s, s, 3)``."""
    import numpy as np
    import torch

    from ..constants import IMAGENET_MEAN, IMAGENET_STD
    if tile.dtype == torch.uint8:
        return tile.permute(1, 2, 0).numpy()
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    x = (tile.float() * std + mean).clamp(0, 1) * 255
    return x.round().to(torch.uint8).permute(1, 2, 0).numpy().astype(np.uint8)


def _overlay(image, masks, alpha=0.25):
    """``(n, H, W)`` masks (any size: nearest-resized) drawn onto image:
    a light fill and a contour, one distinct colour per object
    (:func:`projects.sa2va.visualization.overlay_masks`)."""
    import numpy as np

    from ..visualization import overlay_masks
    return overlay_masks(image, np.asarray(masks), fill=alpha)


def derive_option_a_sample(sample: dict) -> dict:
    """An option-A sample (``option_a_image``, ``option_a_mask``) with the
    tile and grid that ``Sa2VADataPreprocessor`` would derive:
    ``pixel_values (1, 3, 448, 448)`` float, and for describe
    ``prompt_masks (1, 16, 16) bool`` and ``vp_overall_mask (1,)``."""
    import torch

    from ..transforms.functional import option_a_prompt_masks, option_a_tiles
    out = dict(sample)
    out['pixel_values'] = option_a_tiles(out.pop('option_a_image')[None])
    mask = out.pop('option_a_mask', None)
    if mask is not None:
        out['prompt_masks'] = option_a_prompt_masks(mask[None])
        out['vp_overall_mask'] = torch.ones(1, dtype=torch.bool)
    return out


def render_sample(sample: dict, encoder, path, title: str = '') -> None:
    """Write a PNG of one processed sample.

    Panels: the prompted tile (thumbnail) with the 16 x 16 prompt-mask grid
    (visual prompts), the SAM2 input with the GT masks (grounding; first
    and last frame for video), the first tile otherwise; and the decoded
    conversation with image blocks collapsed (``<img>[256 x 13]</img>``).
    """
    import textwrap

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np

    if sample.get('option_a_image') is not None:
        sample = derive_option_a_sample(sample)
    panels = []
    pv = sample.get('pixel_values')
    if sample.get('prompt_masks') is not None and pv is not None:
        vp = sample.get('vp_overall_mask')
        k = int(np.flatnonzero(vp.numpy())[0]) if vp is not None else -1
        tile = _to_uint8_image(pv[k])
        pm = sample['prompt_masks']
        counts = [int(c) for c in pm.flatten(1).sum(1)]
        panels.append((_overlay(tile, pm), f'prompt masks on tile {k} '
                       f'(16x16 cells; tokens per region {counts})', True))
    g = sample.get('g_pixel_values')
    if g is not None:
        frames = [g] if g.ndim == 3 else [g[0], g[-1]]
        masks = sample.get('masks')
        n_frames = 1 if g.ndim == 3 else g.shape[0]
        for j, f in enumerate(frames):
            img = f.permute(1, 2, 0).numpy()
            if masks is not None and len(masks):
                t = 0 if j == 0 else n_frames - 1
                sel = masks[t::n_frames] if n_frames > 1 else masks
                img = _overlay(img, sel)
            label = 'SAM2 input + GT masks' + (
                f' (frame {0 if j == 0 else n_frames - 1})'
                if n_frames > 1 else '')
            panels.append((img, label, False))
    if not panels and pv is not None:
        panels.append((_to_uint8_image(pv[0]), 'tile 0', False))
    text = encoder.decode(sample['input_ids']) if encoder else ''
    wrapped = '\n'.join(textwrap.fill(line, 90, replace_whitespace=False)
                        for line in text.splitlines())
    ncols = max(1, len(panels)) + 1
    fig, axes = plt.subplots(1, ncols, figsize=(5 * ncols, 5.5))
    axes = np.atleast_1d(axes)
    for ax, (img, label, grid) in zip(axes, panels):
        ax.imshow(img)
        if grid:
            s = img.shape[0]
            for c in range(1, 16):
                ax.axhline(c * s / 16, color='white', lw=0.3)
                ax.axvline(c * s / 16, color='white', lw=0.3)
        ax.set_title(label, fontsize=8)
        ax.axis('off')
    axes[-1].axis('off')
    axes[-1].text(0, 1, wrapped[:3000], va='top', ha='left', fontsize=6,
                  family='monospace', wrap=True)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
