"""docs/evaluation.md "Commands on the sample data": every command runs
(tools/test.py in-process, tiny model, sample data) and writes the files
the doc promises."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / 'tools'))


def sample_block() -> str:
    text = (REPO / 'docs' / 'evaluation.md').read_text()
    section = text.split('## Commands on the sample data', 1)[1]
    return section.split('```bash\n', 1)[1].split('```', 1)[0]


def _commands():
    from tests.test_docs_snippets import commands
    return commands(sample_block())


def test_block_covers_every_task_and_format():
    argvs = [shlex.split(c) for c in _commands()]
    assert {a[a.index('--task') + 1] for a in argvs} == {
        'refseg', 'vos', 'gcg', 'caption'}
    assert {a[a.index('--dataset-type') + 1] for a in argvs
            if '--dataset-type' in a} == {'ReVOSDataset', 'MeViSDataset',
                                          'RefYTVOSDataset'}


@pytest.mark.parametrize('index', range(7))
def test_sample_command_runs(index, sample_cwd, monkeypatch):
    import test as test_tool
    cmd = _commands()[index]
    argv = shlex.split(cmd)
    assert argv[:2] == ['python', 'tools/test.py']
    monkeypatch.chdir(sample_cwd)
    args = argv[2:]
    out = f'docs_eval_{index}'
    args[args.index('--out') + 1] = out
    res = test_tool.main([str(REPO / args[0]), *args[1:]])
    name = test_tool.run_name(test_tool.parse_args(args[1:]))
    saved = json.loads((sample_cwd / out / f'metrics_{name}.json').read_text())
    assert saved['metrics'] == res and saved['items'] >= 1
    task = args[args.index('--task') + 1]
    if '--save-preds' in args and task == 'vos':
        pngs = list((sample_cwd / out / f'{name}_preds' / 'Annotations').rglob('*.png'))
        assert pngs and all(p.parent.parent.parent.name == 'Annotations' for p in pngs)
    if '--save-preds' in args and task == 'gcg':
        files = list((sample_cwd / out / f'{name}_preds').glob('*.json'))
        assert len(files) == saved['items']
        pred = json.loads(files[0].read_text())
        assert set(pred) == {'image_id', 'caption', 'phrases', 'pred_masks'}
    if task in ('gcg', 'caption'):
        assert (sample_cwd / out / f'{name}_captions_pred.json').is_file()
        assert (sample_cwd / out / f'{name}_captions_ref.json').is_file()
    if task == 'gcg':
        assert 'text_similarity' in ''.join(res) and 'caption_backend' in ''.join(res)
    if 'ReVOSDataset' in args:
        assert 'vos/R' in res
