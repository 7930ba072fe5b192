"""Top level: write the chosen families and the manifest.

Directory layout under ``out_dir`` (mirrors ``./data`` of the real setup,
so a config's ``data_root='data/sample'`` replaces ``./data``)::

    osprey-724k/                      visual_prompt (Osprey x5)
    describe-anything-dataset/        visual_prompt, mask_caption (DAM)
    ref_seg/refcoco{,+,g}/            refseg, mask_caption (RefCOCO captions)
    video_datas/mevis/ revos/ rvos/   refvos
    video_datas/sam_v_final_v3.json   refvos (SA-V pseudo-referring)
    video_datas/sam_v_full/           refvos, mask_caption (SA-V release)
    video_datas/chat_univi/           vqa
    glamm_data/                       gcg
    llava_data/                       vqa
    mask_caption/                     mask_caption (npz pairs, SA-1B, OpenImage)
    my_data/                          own_data (the own-data format)
    manifest.json

Each module's docstring gives its files in detail.
"""
from __future__ import annotations

import json
from pathlib import Path

from .common import Context, Manifest, SampleSpec
from .files import Writer

FAMILIES = ('visual_prompt', 'refseg', 'refvos', 'gcg', 'vqa', 'mask_caption',
            'own_data')
MANIFEST_NAME = 'manifest.json'


def _writers() -> dict:
    from . import (gcg, mask_caption, own_data, refseg, refvos,
                   visual_prompt, vqa)
    return {'visual_prompt': visual_prompt.write, 'refseg': refseg.write,
            'refvos': refvos.write, 'gcg': gcg.write, 'vqa': vqa.write,
            'mask_caption': mask_caption.write, 'own_data': own_data.write}


def make_sample_data(out_dir, scale: int = 1, seed: int = 0, families=None,
                     realistic: bool = False, bad_records: bool = False
                     ) -> dict:
    """Write sample datasets in the real on-disk formats under ``out_dir``.

    Args:
        out_dir: root folder (created); plays the role of ``./data``.
        scale: multiplies every record count (>= 1).
        seed: same seed (and options) -> byte-identical files.
        families: subset of :data:`FAMILIES` (default all). ``mask_caption``
            also writes the RefCOCO, Describe Anything and SA-V release data
            it reads.
        realistic: benchmark sizes (640 x 480 pictures with 5-10 objects,
            1280 x 720 videos) instead of 160 x 120 with 2-4 objects.
        bad_records: also write deliberately broken records (missing /
            corrupt files, an empty mask), listed under ``bad_records``.

    Returns:
        The manifest (also written to ``out_dir/manifest.json``) plus
        ``root`` (absolute ``out_dir``)::

            {'version': 1, 'options': {scale, seed, realistic, bad_records,
             families}, 'datasets': {name: {paths relative to root, counts}},
             'awkward_cases': [{dataset, file, record, case}],
             'bad_records': [{dataset, file, record, case}],
             'files': [every file written, relative, sorted], 'root': str}

        ``record`` in the case lists is the position in the file's list
        (Osprey, LLaVA, GCG lists, Chat-UniVi, OpenImage CSV data rows from
        0, SA-1B annotations) or the key / id used by the file (video key,
        ``anno_id``, DAM sample id, COCO annotation id, Flickr image or
        annotation id, ``ref_id`` for the refs pickles).
    """
    if int(scale) < 1:
        raise ValueError(f'scale must be >= 1, got {scale}')
    fams = list(FAMILIES) if families is None else list(families)
    unknown = sorted(set(fams) - set(FAMILIES))
    if unknown:
        raise ValueError(f'unknown families {unknown}; choose from '
                         f'{list(FAMILIES)}')
    spec = SampleSpec(scale=int(scale), seed=int(seed),
                      realistic=bool(realistic), bad_records=bool(bad_records))
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    ctx = Context(Writer(root), spec, Manifest())
    writers = _writers()
    for fam in FAMILIES:
        if fam in fams:
            writers[fam](ctx)
    datasets = {name: {k: v for k, v in entry.items() if not k.startswith('_')}
                for name, entry in sorted(ctx.manifest.datasets.items())}
    manifest = {
        'version': 1,
        'options': {'scale': spec.scale, 'seed': spec.seed,
                    'realistic': spec.realistic,
                    'bad_records': spec.bad_records,
                    'families': [f for f in FAMILIES if f in fams]},
        'datasets': datasets,
        'awkward_cases': ctx.manifest.awkward_cases,
        'bad_records': ctx.manifest.bad_records,
        'files': ctx.writer.files,
    }
    (root / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + '\n')
    return dict(manifest, root=str(root.resolve()))
