"""Every ```python config snippet and every ```bash command of README.md
and docs/*.md is built or run.

Bug this guards: docs/datasets.md's "Adding a dataset by config only"
example unpacked mmengine's placeholder string (``[*{{_base_...}}, 2]``) and
the run failed with ``could not convert string to float: '_'``.

What happens to a block (a ``<!-- snippet: skip REASON -->`` line right
before the fence opts it out; the reason is required):

* python config snippets (they have ``_base_``, or a base marker) go into a copy
  of ``configs/`` and loaded with mmengine's ``Config.fromfile`` (a
  ``<!-- snippet: base=configs/X.py -->`` line gives a fragment its base);
  when they define ``train_dataloader.dataset``, every dataset of it is
  built with the project's builders (``projects.sa2va.datasets.check``) in
  a working directory laid out like the real one: ``./data/`` holds the
  generated sample tree (plus ``my_refs/``, a RefCOCO-format copy, for the
  "by config only" example) and ``./pretrained/InternVL2_5-4B`` the tiny
  tokenizer. Models are not built (they need the real checkpoints). Other
  python blocks are API code needing checkpoints: they must compile and
  what they import from ``projects`` must exist.
* bash commands: ``python tools/X.py ...`` and ``torchrun ... tools/X.py``
  are parsed by the tool's own argparse parser (a wrong option or a missing
  argument fails) and their repository paths (``configs/``, ``tools/``,
  ``docs/``) must exist; CONFIG / CKPT placeholders stand for a config and
  a checkpoint. Cheap commands on the tiny configs (``check_data.py``,
  ``browse_dataset.py``, ``make_sample_data.py``) are run for real. ``make
  X`` must be a Makefile target (``make -n X``). Training and GPU commands
  are parsed only: the tiny training runs are tests of their own
  (``tests/tools/test_configs.py``, ``tests/datasets/test_own_data.py``).
"""
from __future__ import annotations

import argparse
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]
FENCE = re.compile(r'^```(\w*)\s*$')
MARK = re.compile(r'<!--\s*snippet:\s*(skip|base=)\s*(.*?)\s*-->')
RUN_FOR_REAL = ('check_data.py', 'browse_dataset.py', 'make_sample_data.py')
PLACEHOLDERS = {'CONFIG': 'configs/sa2va_tiny_demo.py',
                'CKPT': 'work_dirs/demo/iter_100.pth', '...': 'x'}


def blocks():
    """``(doc, line, lang, text, marker)`` for every fenced block."""
    out = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        i = 0
        while i < len(lines):
            m = FENCE.match(lines[i])
            if not m:
                i += 1
                continue
            j = i + 1
            while not lines[j].startswith('```'):
                j += 1
            marker = None
            k = i - 1
            while k >= 0 and not lines[k].strip():
                k -= 1
            mm = MARK.search(lines[k]) if k >= 0 else None
            if mm:
                marker = (mm.group(1), mm.group(2))
            out.append((doc.relative_to(REPO).as_posix(), i + 1, m.group(1),
                        '\n'.join(lines[i + 1:j]), marker))
            i = j + 1
    return out


BLOCKS = [b for b in blocks() if b[2] in ('python', 'bash')]


def _id(b):
    return f'{b[0]}:{b[1]}'


@pytest.fixture(scope='module')
def doc_cwd(sample_cwd, tmp_path_factory):
    """A working directory like a real setup: ./data/* from the sample
    tree, ./data/my_refs (RefCOCO format), ./pretrained/InternVL2_5-4B (the
    tiny tokenizer), ./configs (the repo's, for snippets and commands)."""
    cwd = tmp_path_factory.mktemp('doc_cwd')
    sample = sample_cwd / 'data' / 'sample'
    (cwd / 'data').mkdir()
    for entry in sample.iterdir():
        (cwd / 'data' / entry.name).symlink_to(entry)
    (cwd / 'data' / 'sample').symlink_to(sample)
    refs = cwd / 'data' / 'my_refs'
    shutil.copytree(sample / 'ref_seg' / 'refcoco', refs)
    (refs / 'coco2014' / 'train2014').rename(refs / 'images')
    (cwd / 'pretrained').mkdir()
    (cwd / 'pretrained' / 'InternVL2_5-4B').symlink_to(sample / 'tokenizer')
    for name in ('configs', 'tools', 'docs'):
        (cwd / name).symlink_to(REPO / name)
    return cwd


def _config_file(text: str, marker, tmp_path: Path) -> Path:
    """The snippet as a config file in a copy of configs/."""
    cfg_dir = tmp_path / 'configs'
    cfg_dir.mkdir()
    for entry in (REPO / 'configs').iterdir():
        (cfg_dir / entry.name).symlink_to(entry)
    if marker and marker[0] == 'base=':
        text = f"_base_ = ['{REPO / marker[1]}']\n" + text
    assert '_base_' in text, 'a config fragment needs _base_ or a ' \
        '<!-- snippet: base=configs/X.py --> marker'
    path = cfg_dir / 'doc_snippet.py'
    path.write_text(text)
    return path


def check_code(text: str, where: str) -> None:
    """API code (it needs checkpoints or a trained run): it compiles, and
    every name it imports from ``projects`` exists."""
    import ast
    import importlib
    tree = ast.parse(text, filename=where)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and \
                node.module.startswith('projects'):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), (
                    f'{where}: {node.module} has no {alias.name}')


@pytest.mark.parametrize('block', [b for b in BLOCKS if b[2] == 'python'],
                         ids=_id)
def test_python_snippet_builds(block, doc_cwd, tmp_path, monkeypatch):
    doc, line, _, text, marker = block
    if marker and marker[0] == 'skip':
        assert marker[1], f'{doc}:{line}: a skip marker needs a reason'
        pytest.skip(f'{doc}:{line}: {marker[1]}')
    if '_base_' not in text and not marker:
        check_code(text, f'{doc}:{line}')
        return
    cfg = Config.fromfile(str(_config_file(text, marker, tmp_path)))
    dataset = (cfg.get('train_dataloader') or {}).get('dataset')
    if dataset is None:
        return
    from mmengine.registry import init_default_scope

    from projects.sa2va.datasets.check import build_leaves
    init_default_scope('sa2va')
    monkeypatch.chdir(doc_cwd)
    leaves = build_leaves(dataset)
    errors = [f'{leaf.name}: {leaf.error}' for leaf in leaves if leaf.error]
    assert not errors, f'{doc}:{line}:\n' + '\n'.join(errors)
    assert all(len(leaf.dataset) > 0 for leaf in leaves)


def commands(text: str) -> list[str]:
    """Shell commands of a bash block: comments dropped, continuations
    joined."""
    out, cur = [], ''
    for raw in text.splitlines():
        line = raw.split(' #')[0].rstrip() if not raw.lstrip().startswith(
            '#') else ''
        if not line.strip():
            continue
        if line.endswith('\\'):
            cur += line[:-1] + ' '
            continue
        out.append((cur + line).strip())
        cur = ''
    return out


class _Parsed(Exception):
    pass


def parse_tool(tool: Path, args: list[str]) -> argparse.Namespace:
    """Parse ``args`` with ``tool``'s own parser (its main() stops right
    after parsing)."""
    orig = argparse.ArgumentParser.parse_args

    def parse(self, argv=None, namespace=None):
        raise _Parsed(orig(self, argv, namespace))
    argparse.ArgumentParser.parse_args = parse
    saved = sys.argv
    sys.argv = [str(tool), *args]
    try:
        runpy.run_path(str(tool), run_name='__main__')
    except _Parsed as parsed:
        return parsed.args[0]
    finally:
        argparse.ArgumentParser.parse_args = orig
        sys.argv = saved
    raise AssertionError(f'{tool.name} did not parse its arguments')


def _python_tool(argv: list[str]):
    """``(tool path, args)`` of a ``python tools/X.py`` / ``torchrun``
    command, or None."""
    if argv[0] == 'torchrun':
        k = next(i for i, a in enumerate(argv) if a.endswith('.py'))
        return REPO / argv[k], argv[k + 1:]
    if argv[0] in ('python', 'python3') and len(argv) > 1 and \
            argv[1].endswith('.py'):
        return REPO / argv[1], argv[2:]
    return None


def _run_for_real(tool: Path, args: list[str]) -> bool:
    config = next((a for a in args if a.startswith('configs/')), None)
    return tool.name in RUN_FOR_REAL and (
        config is None or 'tiny' in config)


@pytest.mark.parametrize('block', [b for b in BLOCKS if b[2] == 'bash'],
                         ids=_id)
def test_bash_commands_parse_or_run(block, doc_cwd, tmp_path):
    doc, line, _, text, marker = block
    if marker and marker[0] == 'skip':
        assert marker[1], f'{doc}:{line}: a skip marker needs a reason'
        pytest.skip(f'{doc}:{line}: {marker[1]}')
    for cmd in commands(text):
        argv = [PLACEHOLDERS.get(a, a) for a in shlex.split(cmd)]
        where = f'{doc}:{line}: {cmd}'
        if argv[0] == 'make':
            proc = subprocess.run(['make', '-n', *argv[1:]], cwd=REPO,
                                  capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, f'{where}\n{proc.stderr}'
            continue
        found = _python_tool(argv)
        assert found, f'{where}: unknown command; mark the block <!-- ' \
            f'snippet: skip REASON --> or teach this test'
        tool, args = found
        assert tool.is_file(), f'{where}: {tool} does not exist'
        for a in args:
            if a.split('/')[0] in ('configs', 'tools', 'docs'):
                assert (REPO / a).exists(), f'{where}: {a} does not exist'
        parse_tool(tool, args)
        if _run_for_real(tool, args):
            cwd = doc_cwd
            if tool.name == 'make_sample_data.py':
                cwd = tmp_path
            env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
            proc = subprocess.run([sys.executable, str(tool), *args],
                                  cwd=cwd, env=env, capture_output=True,
                                  text=True, timeout=600)
            assert proc.returncode == 0, (f'{where}\n{proc.stdout[-3000:]}'
                                          f'\n{proc.stderr[-3000:]}')


def test_every_block_is_seen():
    """The extraction finds the blocks (a broken fence would hide them)."""
    assert sum(b[2] == 'python' for b in BLOCKS) >= 5
    assert sum(b[2] == 'bash' for b in BLOCKS) >= 8
