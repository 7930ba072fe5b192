"""Machinery of the malformed-input fuzz test (``test_fuzz_bad_data.py``).

A *case* copies one file of generated sample data into a case folder (the
rest of the data is linked, never written), breaks it, builds the family's
dataset from its base config over the case folder and runs every record
through the pipeline (stopping at the first bad one), in a forked child so
that a segfault, an out-of-memory kill or a hang is seen as such.

Each case ends in one of these classes:

* ``named_error``: building the dataset raised a ``ValueError`` /
  ``OSError`` / ``UnpicklingError`` whose message names the broken file;
* ``skipped_counted``: a record raised :class:`RecordError` (with a reason,
  and the sample drawn in its place through ``dataset[idx]`` carries
  ``data_stats['skipped/<reason>']``), or the index left the record out
  with a logged warning naming the file;
* ``unclear_crash``: any other exception, or one not naming the file;
* ``signal`` / ``hang``: the child died or ran past the time limit;
* ``silent``: every record gave a sample although the input is broken.
"""
from __future__ import annotations

import copy
import io
import json
import logging
import os
import pickle
import shutil
import signal
import struct
import tarfile
import time
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

GOOD = ('named_error', 'skipped_counted')


@dataclass
class Case:
    """One malformed input.

    Attributes:
        name: unique id (``family/dataset/what``).
        family: one of the six families.
        dataset: key of the dataset dict in its base config.
        files: ``{path relative to the data root: mutate(path)}``; ``'@img0'``
            stands for the image (``'@frames0'``: the frame folder,
            ``'@video0'``: the video) of record 0.
        clean: the input is not broken (the baseline of a dataset): every
            record must give a sample.
        risky: may crash or hang the process (polygon coordinates, huge
            sizes, bombs, pickles): run in a forked child; the others run
            in this process under an alarm.
    """
    name: str
    family: str
    dataset: str
    files: dict
    clean: bool = False
    risky: bool = False
    result: dict = field(default_factory=dict)


# -- case folders ------------------------------------------------------------
def _materialize(case_root: Path, template: Path, rel: str) -> Path:
    """Make ``case_root/rel`` a writable copy (its folders real folders of
    links), and return it. The template is never written."""
    parts = Path(rel).parts
    cur_c, cur_t = case_root, template
    for p in parts[:-1]:
        cur_c, cur_t = cur_c / p, cur_t / p
        if cur_c.is_symlink():
            cur_c.unlink()
        if not cur_c.exists():
            cur_c.mkdir()
            for child in cur_t.iterdir():
                (cur_c / child.name).symlink_to(child)
    target, src = cur_c / parts[-1], cur_t / parts[-1]
    if target.is_symlink():
        target.unlink()
    if src.is_dir():
        shutil.copytree(src, target)
    elif src.exists():
        shutil.copyfile(src, target)
    return target


def make_case_root(case_root: Path, template: Path) -> None:
    case_root.mkdir(parents=True)
    for child in template.iterdir():
        (case_root / child.name).symlink_to(child)


# -- mutators ------------------------------------------------------------------
def zero(path: Path) -> None:
    path.write_bytes(b'')


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:max(1, len(data) // 2)])


def garbage(path: Path) -> None:
    path.write_bytes(b'\x00\xff\x10not a data file\x00' * 8)


def not_utf8(path: Path) -> None:
    path.write_bytes(b'[{"caption": "caf\xe9 \xff\xfe"}]')


def json_edit(fn: Callable) -> Callable:
    """A mutator that edits the parsed JSON (NaN/Infinity allowed out)."""
    def mutate(path: Path) -> None:
        obj = json.loads(path.read_text(encoding='utf-8'))
        obj = fn(obj) or obj
        path.write_text(json.dumps(obj), encoding='utf-8')
    return mutate


def json_text(text: str) -> Callable:
    def mutate(path: Path) -> None:
        path.write_text(text, encoding='utf-8')
    return mutate


def text_edit(fn: Callable) -> Callable:
    def mutate(path: Path) -> None:
        path.write_text(fn(path.read_text(encoding='utf-8')),
                        encoding='utf-8')
    return mutate


def pickle_edit(fn: Callable) -> Callable:
    """Edit the (trusted, generated) pickle and write it back, protocol 2."""
    def mutate(path: Path) -> None:
        obj = pickle.loads(path.read_bytes())
        obj = fn(obj) or obj
        path.write_bytes(pickle.dumps(obj, protocol=2))
    return mutate


class _RunsCode:
    """Unpickling this calls ``os.system``: the attack a data pickle may
    carry."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


def malicious_pickle(marker: str, wrap: Callable | None = None) -> Callable:
    """A pickle that creates ``marker`` if it is ever unpickled unsafely
    (``wrap`` places the payload inside otherwise valid data)."""
    def mutate(path: Path) -> None:
        payload = _RunsCode(marker)
        obj = wrap(pickle.loads(path.read_bytes()), payload) if wrap \
            else payload
        path.write_bytes(pickle.dumps(obj, protocol=2))
    return mutate


def png_bytes(width: int, height: int, mode_byte: int = 0,
              depth: int = 8) -> bytes:
    """A PNG whose header states ``width x height`` (one tiny IDAT: a
    decoder that trusts the header allocates the stated size)."""
    def chunk(tag, data):
        return (struct.pack('>I', len(data)) + tag + data
                + struct.pack('>I', zlib.crc32(tag + data) & 0xffffffff))
    ihdr = struct.pack('>IIBBBBB', width, height, depth, mode_byte, 0, 0, 0)
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr)
            + chunk(b'IDAT', zlib.compress(b'\x00' * 16)) + chunk(b'IEND',
                                                                 b''))


def bomb_image(path: Path) -> None:
    """An image over PIL's decompression-bomb limit (header only)."""
    path.write_bytes(png_bytes(40000, 40000))


def pil_edit(fn: Callable) -> Callable:
    """Re-save the image after ``fn(PIL image) -> PIL image`` (same format
    as the file's extension allows: JPEG, else PNG)."""
    def mutate(path: Path) -> None:
        from PIL import Image
        with Image.open(path) as im:
            im.load()
            out = fn(im)
        fmt = 'JPEG' if path.suffix.lower() in ('.jpg', '.jpeg') and \
            out.mode in ('RGB', 'L') else 'PNG' if out.mode != 'F' else 'TIFF'
        buf = io.BytesIO()
        out.save(buf, format=fmt)
        path.write_bytes(buf.getvalue())
    return mutate


def transpose_image(im):
    from PIL import Image
    return im.transpose(Image.Transpose.ROTATE_90)


def resize_image(im):
    return im.resize((im.width + 8, im.height + 4))


def float_image(im):
    import numpy as np
    from PIL import Image
    return Image.fromarray(np.asarray(im.convert('L'), np.float32) * 1e3,
                           mode='F')


def for_each_file(mutator: Callable, pattern: str = '*') -> Callable:
    """Apply ``mutator`` to every file of a (copied) folder."""
    def mutate(path: Path) -> None:
        for p in sorted(path.glob(pattern)):
            if p.is_file():
                mutator(p)
    return mutate


def cut_tar(path: Path) -> None:
    """Cut a tar shard in the middle of its first member's data."""
    with tarfile.open(path, 'r:') as tf:
        first = next(m for m in tf if m.isfile())
    data = path.read_bytes()
    path.write_bytes(data[:first.offset_data + first.size // 2])


# -- running a case ------------------------------------------------------------
def _with_root(cfg, root: str):
    """Config dict with every ``./data/`` path moved under ``root``."""
    if isinstance(cfg, dict):
        return {k: _with_root(v, root) for k, v in cfg.items()}
    if isinstance(cfg, list):
        return [_with_root(v, root) for v in cfg]
    if isinstance(cfg, str) and cfg.startswith('./data/'):
        return root.rstrip('/') + '/' + cfg[len('./data/'):]
    return cfg


def build(cfg_dict: dict, root: Path, tokenizer):
    from tests.datasets.family_utils import build_dataset
    cfg = _with_root(copy.deepcopy(cfg_dict), str(root))
    if 'index_cache_dir' in cfg:
        cfg['index_cache_dir'] = None
    for step in cfg.get('pipeline') or []:
        if not isinstance(step, dict):
            continue
        if step.get('type') == 'EncodeLLaVAConversation':
            step.setdefault('tokenizer', tokenizer)
            step.setdefault('template', 'phi3_chat')
        # small images: the checks do not depend on the tile count or the
        # SAM2 input size, the test time does
        if step.get('type') == 'DynamicTiles':
            step['max_num'] = 1
        if step.get('type') == 'SAM2Input':
            step['size'] = 128
    return build_dataset(cfg, tokenizer)


class _Capture(logging.Handler):

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def run_in_child(cfg_dict: dict, root: Path, tokenizer, names) -> dict:
    """Build and check the dataset (in a forked child for a risky case).
    ``names``: strings of which one must appear in a build error's
    message."""
    from mmengine.logging import MMLogger
    cap = _Capture()
    logger = MMLogger.get_current_instance()
    logger.addHandler(cap)
    try:
        return _check(cfg_dict, root, tokenizer, names, cap)
    finally:
        logger.removeHandler(cap)


def _check(cfg_dict, root, tokenizer, names, cap) -> dict:
    from projects.sa2va.transforms.base import RecordError
    try:
        dataset = build(cfg_dict, root, tokenizer)
        dataset.full_init()
    except Exception as exc:  # classified by the parent
        named = any(n in str(exc) for n in names)
        ok_type = isinstance(exc, (ValueError, OSError,
                                   pickle.UnpicklingError))
        return dict(stage='build', type=type(exc).__name__,
                    message=str(exc)[:400], named=named, ok_type=ok_type)
    index_warnings = [m for m in cap.messages
                      if any(n in m for n in names)]
    stats = getattr(dataset, 'index_stats', None) or {}
    for idx in range(len(dataset)):
        try:
            dataset.prepare_data(idx)
        except RecordError as exc:
            out = dict(stage='record', index=idx, reason=exc.reason,
                       message=str(exc)[:400],
                       record=dataset.describe_record(idx)
                       if hasattr(dataset, 'describe_record') else '')
            if len(dataset) > 1 and hasattr(dataset, 'get_sample'):
                dataset.max_bad_fraction = 1.0
                try:
                    sample = dataset.get_sample(idx)
                    out['counted'] = sample.get('data_stats', {}).get(
                        f'skipped/{exc.reason}', 0)
                except RuntimeError as exc2:  # every record is bad
                    out['counted'] = -1
                    out['all_bad'] = str(exc2)[:200]
            return out
        except Exception as exc:
            return dict(stage='record', index=idx, type=type(exc).__name__,
                        message=str(exc)[:400],
                        trace=traceback.format_exc()[-1500:])
    return dict(stage='ok', records=len(dataset), index_stats=dict(stats),
                index_warnings=index_warnings[:3])


def classify(case: Case, res: dict) -> str:
    if res.get('stage') == 'signal':
        return 'signal'
    if res.get('stage') == 'hang':
        return 'hang'
    if res.get('stage') == 'build':
        return 'named_error' if res['named'] and res['ok_type'] \
            else 'unclear_crash'
    if res.get('stage') == 'record':
        if 'reason' not in res:
            return 'unclear_crash'
        if not res['reason'] or not res['message']:
            return 'unclear_crash'
        counted = res.get('counted')
        return 'skipped_counted' if counted is None or counted != 0 \
            else 'unclear_crash'
    if case.clean:
        return 'clean'
    if res.get('index_stats') or res.get('index_warnings'):
        return 'skipped_counted'
    return 'silent'


class _Hang(BaseException):
    """Raised by the alarm of an in-process case."""


def run_cases(cases, cfgs: dict, template: Path, work: Path, tokenizer,
              targets: dict, timeout: float = 60.0, parallel: int = 2):
    """Run the cases (risky ones in forked children, ``parallel`` at a
    time; the others in this process under an alarm); fill ``case.result``
    with the report and ``case.result['class']``.

    ``targets[dataset]`` maps the ``'@...'`` placeholders to paths relative
    to ``template``."""
    def prepare(case):
        root = work / case.name.replace('/', '__')
        make_case_root(root, template)
        names = []
        for rel, mutate in case.files.items():
            rel = targets.get(case.dataset, {}).get(rel, rel)
            path = _materialize(root, template, rel)
            mutate(path)
            names += [str(path), rel, Path(rel).name]
        return root, names

    def on_alarm(signum, frame):
        raise _Hang()

    for case in cases:
        if case.risky:
            continue
        root, names = prepare(case)
        old = signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(int(timeout))
        try:
            case.result = run_in_child(cfgs[case.dataset], root, tokenizer,
                                       names)
        except _Hang:
            case.result = dict(stage='hang')
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
        case.result = json.loads(json.dumps(case.result, default=str))
        case.result['class'] = classify(case, case.result)

    pending = [c for c in cases if c.risky]
    running: dict = {}
    while pending or running:
        while pending and len(running) < parallel:
            case = pending.pop(0)
            root, names = prepare(case)
            out = work / (case.name.replace('/', '__') + '.result.json')
            pid = os.fork()
            if pid == 0:  # child
                # One intra-op thread, as DataLoader workers do: a forked
                # child entering an OpenMP region that the parent's pool
                # already used deadlocks with GNU libgomp (seen with
                # OMP_NUM_THREADS=2, the CI setting).
                import torch
                torch.set_num_threads(1)
                code = 0
                try:
                    res = run_in_child(cfgs[case.dataset], root, tokenizer,
                                       names)
                    data = json.dumps(res, default=str).encode()
                except BaseException:  # noqa: B902 - report, never raise
                    data = json.dumps(dict(
                        stage='record', type='child',
                        message=traceback.format_exc()[-1500:])).encode()
                    code = 1
                # a file, not a pipe: a report larger than the pipe buffer
                # would block the child until the parent's time limit
                out.write_bytes(data)
                os._exit(code)
            running[pid] = (case, out, time.monotonic())
        time.sleep(0.005)
        for pid, (case, out, start) in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == 0:
                if time.monotonic() - start > timeout:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    case.result = dict(stage='hang')
                    case.result['class'] = classify(case, case.result)
                    del running[pid]
                continue
            data = out.read_bytes() if out.exists() else b''
            if os.WIFSIGNALED(status) or not data:
                case.result = dict(stage='signal',
                                   signal=os.WTERMSIG(status)
                                   if os.WIFSIGNALED(status) else None)
            else:
                case.result = json.loads(data)
            case.result['class'] = classify(case, case.result)
            del running[pid]
    return cases
