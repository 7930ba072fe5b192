"""Where the checkpoints a config names come from, and the message a first
run without them gets ("download X into Y") instead of a transformers
``HFValidationError`` about a repository id.

``KNOWN`` maps the file or folder name the shipped configs use to what it
is and where to get it (README.md, "Downloads", lists the same).
"""
from __future__ import annotations

import os
import os.path as osp

HF = 'https://huggingface.co/'
SAM2_URL = 'https://dl.fbaipublicfiles.com/segment_anything_2/'

#: name in ./pretrained/ -> (what, source, how to fetch it)
KNOWN = {
    **{f'InternVL2_5-{s}': (
        f'InternVL2.5-{s}', f'{HF}OpenGVLab/InternVL2_5-{s}',
        f'huggingface-cli download OpenGVLab/InternVL2_5-{s} --local-dir '
        f'{{path}}') for s in ('1B', '4B', '8B')},
    **{name: (name.replace('_', '.'), f'{HF}OpenGVLab/{name}',
              f'huggingface-cli download OpenGVLab/{name} --local-dir {{path}}')
       for name in ('InternVL3-2B', 'InternVL3-8B', 'InternVL3_5-4B', 'InternVL3_5-8B')},
    **{name: (name, f'{HF}Qwen/{name}',
              f'huggingface-cli download Qwen/{name} --local-dir {{path}}')
       for name in ('Qwen2.5-VL-3B-Instruct', 'Qwen2.5-VL-7B-Instruct',
                    'Qwen3-VL-2B-Instruct', 'Qwen3-VL-4B-Instruct')},
    **{f'Sa2VA-{s}': (
        f'the released Sa2VA-{s}', f'{HF}ByteDance/Sa2VA-{s}',
        f'huggingface-cli download ByteDance/Sa2VA-{s} --local-dir {{path}}')
       for s in ('1B', '4B', '8B')},
    'sam2_hiera_large.pt': (
        'SAM2 Hiera-L', f'{SAM2_URL}072824/sam2_hiera_large.pt',
        f'wget -O {{path}} {SAM2_URL}072824/sam2_hiera_large.pt'),
    'sam2.1_hiera_large.pt': (
        'SAM2.1 Hiera-L', f'{SAM2_URL}092824/sam2.1_hiera_large.pt',
        f'wget -O {{path}} {SAM2_URL}092824/sam2.1_hiera_large.pt'),
    'tokenizer': ('the tiny tokenizer of the sample data', 'this project',
                  'python tools/make_sample_data.py --out data/sample'),
}


def looks_local(path: str) -> bool:
    """A path meant as a local file or folder rather than a Hugging Face
    hub id (``org/name``): it starts with ``.``, ``/`` or ``~``, has more
    than one ``/``, or ends with a checkpoint suffix."""
    path = str(path)
    return (path.startswith(('.', '/', '~')) or path.count('/') > 1
            or path.endswith(('.pt', '.pth', '.safetensors', '.bin')))


def missing_message(path: str, what: str = 'checkpoint') -> str:
    """The "download X into Y" text for a missing ``path``."""
    name = osp.basename(osp.normpath(str(path)))
    known = KNOWN.get(name)
    if known is None:
        return (f'{what} not found: {path} (a local file or folder; '
                f'README.md "Downloads" lists the checkpoints and data)')
    label, source, how = known
    return (f'{what} not found: {path}\n  download {label} ({source}) into '
            f'{path}, e.g.\n    {how.format(path=path)}\n  (README.md '
            f'"Downloads" lists every checkpoint and dataset)')


def require_local(path, what: str = 'checkpoint') -> None:
    """Raise ``FileNotFoundError`` with the download hint when a local-
    looking ``path`` does not exist (hub ids pass through).

    Raises:
        FileNotFoundError: the path is missing.
    """
    if path is None or not isinstance(path, (str, os.PathLike)):
        return
    path = str(path)
    if looks_local(path) and not osp.exists(osp.expanduser(path)):
        raise FileNotFoundError(missing_message(path, what))
