"""Checkpoints are untrusted files: loading one never runs code, a damaged
or unfit one is refused with a message naming it, and saving never leaves a
run without a loadable latest checkpoint.

Every "malicious" file here holds a payload that creates a marker file when
evaluated or unpickled; each test asserts the marker is absent afterwards
(``test_payload_is_live`` shows the payloads do run where they are
evaluated).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from projects.sa2va.engine.checkpoint import CheckpointError

from .test_resume import _toy_runner

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / 'configs' / 'sa2va_tiny_demo.py')


class _Payload:
    """Unpickling it runs ``touch marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def _malicious(path: Path, marker: Path) -> Path:
    """A file shaped like a run checkpoint whose unpickling runs code."""
    torch.save({'meta': {'epoch': 0, 'iter': 3},
                'state_dict': {'fc.weight': _Payload(marker)},
                'message_hub': {}, 'optimizer': {}}, path)
    return path


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A toy run of 10 iterations (checkpoints at 3, 6, 9) and its trace."""
    root = tmp_path_factory.mktemp('trust')
    runner = _toy_runner(root, 'trust_full')
    runner.train()
    return root, runner.model.trace


def _checkpoint(trained, it=6) -> dict:
    return torch.load(trained[0] / f'iter_{it}.pth', map_location='cpu',
                      weights_only=True)


# ------------------------------------------------------------ no code runs
def test_resume_never_evaluates_meta_config(trained, tmp_path):
    """mmengine's resume runs ``Config.fromstring(meta['config'])``."""
    marker = tmp_path / 'marker'
    ckpt = _checkpoint(trained)
    ckpt['meta']['config'] = f'__import__("os").system("touch {marker}")'
    ckpt['meta']['cfg'] = ckpt['meta']['config']
    torch.save(ckpt, tmp_path / 'config_payload.pth')
    runner = _toy_runner(tmp_path / 'w', 'trust_cfg', resume=True,
                         load_from=str(tmp_path / 'config_payload.pth'))
    runner.train()
    assert not marker.exists()
    # resumed exactly: the same batches and losses as the uninterrupted run
    assert runner.model.trace == trained[1][6:]


def test_flexible_runner_resume_never_evaluates_meta_config(tmp_path):
    """The strategy runs' runner (mmengine's FlexibleRunner evaluates
    ``meta['config']`` too); on CPU it runs the single-device strategy."""
    from projects.sa2va.engine.runner import Sa2VAFlexibleRunner
    _toy_runner(tmp_path / 'full', 'flex_full',
                runner_cls=Sa2VAFlexibleRunner).train()
    marker = tmp_path / 'marker'
    ckpt = torch.load(tmp_path / 'full' / 'iter_6.pth', weights_only=True)
    ckpt['meta']['config'] = f'__import__("os").system("touch {marker}")'
    torch.save(ckpt, tmp_path / 'config_payload.pth')
    runner = _toy_runner(tmp_path / 'w', 'flex_resumed',
                         runner_cls=Sa2VAFlexibleRunner, resume=True,
                         load_from=str(tmp_path / 'config_payload.pth'))
    runner.train()
    assert not marker.exists()
    # resumed in epoch 1 (mmengine's epoch loop trains that epoch's 5
    # batches again; a fresh start would train 10)
    assert runner.epoch == 2 and len(runner.model.trace) == 5


def test_payload_is_live(tmp_path):
    """The payloads of these tests do run when evaluated / unpickled, so an
    absent marker means the loading path refused them."""
    from mmengine.config import Config
    marker = tmp_path / 'marker'
    Config.fromstring(f'__import__("os").system("touch {marker}")',
                      file_format='.py')
    assert marker.exists()
    marker.unlink()
    torch.load(_malicious(tmp_path / 'm.pth', marker), weights_only=False)
    assert marker.exists()


def _run_load_from(work, path):
    _toy_runner(work, 'trust_load', load_from=str(path)).load_or_resume()


def _run_resume(work, path):
    _toy_runner(work, 'trust_resume', resume=True,
                load_from=str(path)).load_or_resume()


def _run_auto_resume(work, path):
    work.mkdir(parents=True, exist_ok=True)
    (work / 'last_checkpoint').write_text(str(path))
    _toy_runner(work, 'trust_auto', resume=True).load_or_resume()


def _run_mmengine_load_checkpoint(work, path):
    from mmengine.runner import load_checkpoint
    load_checkpoint(torch.nn.Linear(4, 1), str(path))


def _run_init_cfg_pretrained(work, path):
    from mmengine.model import BaseModule

    class M(BaseModule):
        def __init__(self):
            super().__init__(init_cfg=dict(type='Pretrained',
                                           checkpoint=str(path)))
            self.fc = torch.nn.Linear(4, 1)
    M().init_weights()


def _run_sam2_checkpoint(work, path):
    from projects.sa2va.models.sam2.build import read_state_dict
    read_state_dict(path)


@pytest.mark.parametrize('load', [
    _run_load_from, _run_resume, _run_auto_resume,
    _run_mmengine_load_checkpoint, _run_init_cfg_pretrained,
    _run_sam2_checkpoint], ids=lambda f: f.__name__[5:])
def test_malicious_pickle_is_refused(load, tmp_path):
    marker = tmp_path / 'marker'
    path = _malicious(tmp_path / 'payload.pth', marker)
    with pytest.raises(Exception) as err:
        load(tmp_path / 'work', path)
    assert not marker.exists()
    assert isinstance(err.value, CheckpointError)
    assert str(path) in str(err.value) and 'system' in str(err.value)


@pytest.mark.parametrize('tool', ['predict', 'test', 'export'])
def test_tools_refuse_malicious_checkpoint(tool, sample_cwd, tmp_path,
                                           monkeypatch):
    """tools/predict.py, test.py, export.py CONFIG CKPT (the training
    checkpoint goes to ``Sa2VAModel.load_pretrained``, as
    ``model.pretrained_pth`` does)."""
    sys.path.insert(0, str(REPO / 'tools'))
    try:
        module = __import__(tool)
    finally:
        sys.path.pop(0)
    monkeypatch.chdir(sample_cwd)
    marker = tmp_path / 'marker'
    ckpt = str(_malicious(tmp_path / 'payload.pth', marker))
    image = next((sample_cwd / 'data/sample/ref_seg/refcoco/coco2014/'
                  'train2014').iterdir())
    argv = {'predict': [TINY, ckpt, '--image', str(image), '--text', 'x',
                        '--out', str(tmp_path / 'out')],
            'test': [TINY, ckpt, '--task', 'refseg', '--data-root',
                     'data/sample/ref_seg/refcoco', '--max-items', '1',
                     '--out', str(tmp_path / 'out')],
            'export': [ckpt, '--config', TINY, '--out',
                       str(tmp_path / 'out')]}[tool]
    with pytest.raises(CheckpointError, match='is refused by torch.load') as err:
        module.main(argv)
    assert not marker.exists()
    assert ckpt in str(err.value)


@pytest.fixture(scope='module')
def export_dir(sample_cwd, tmp_path_factory):
    """``tools/export.py - --config TINY --out DIR`` (built weights)."""
    sys.path.insert(0, str(REPO / 'tools'))
    try:
        import export
    finally:
        sys.path.pop(0)
    out = tmp_path_factory.mktemp('export') / 'tiny'
    cwd = os.getcwd()
    os.chdir(sample_cwd)
    try:
        export.main(['-', '--config', TINY, '--out', str(out)])
    finally:
        os.chdir(cwd)
    return out


def _copy_export(export_dir, tmp_path) -> Path:
    import shutil
    return Path(shutil.copytree(export_dir, tmp_path / 'export'))


@pytest.mark.parametrize('where', ['model', 'grounding_encoder', 'remote'])
def test_export_config_cannot_name_code(where, export_dir, tmp_path):
    """predict/test --export and Sa2VAPredictor.from_export build the model
    of sa2va_export.json: mmengine imports and calls any dotted ``type``."""
    from projects.sa2va.evaluation.predictor import (EXPORT_CONFIG,
                                                     Sa2VAPredictor)
    marker = tmp_path / 'marker'
    out = _copy_export(export_dir, tmp_path)
    meta = json.loads((out / EXPORT_CONFIG).read_text())
    payload = dict(type='subprocess.run', args=['touch', str(marker)])
    if where == 'model':
        meta['model'] = payload
        message = r"type = 'subprocess.run' is not a type registered"
    elif where == 'grounding_encoder':
        meta['model']['grounding_encoder'] = payload
        message = r"grounding_encoder.type = 'subprocess.run'"
    else:
        meta['model']['mllm']['trust_remote_code'] = True
        message = r'mllm.trust_remote_code is true'
    (out / EXPORT_CONFIG).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=message) as err:
        Sa2VAPredictor.from_export(str(out))
    assert str(out / EXPORT_CONFIG) in str(err.value)
    assert not marker.exists()


def test_export_tokenizer_code_never_runs(export_dir, tmp_path):
    """A tokenizer_config.json ``auto_map`` naming a module of the export
    directory: imported only with trust_remote_code, which exports never
    get."""
    from projects.sa2va.evaluation.predictor import Sa2VAPredictor
    marker = tmp_path / 'marker'
    out = _copy_export(export_dir, tmp_path)
    _evil_tokenizer_code(out / 'tokenizer', marker)
    predictor = Sa2VAPredictor.from_export(str(out))
    assert not marker.exists()
    assert predictor.tokenizer.convert_tokens_to_ids('[SEG]') is not None


def _evil_tokenizer_code(tok_dir: Path, marker: Path) -> None:
    """``tokenizer_config.json`` ``auto_map`` -> a module of the directory
    that creates ``marker`` when imported."""
    (tok_dir / 'evil_tokenization.py').write_text(
        f'import pathlib\npathlib.Path({str(marker)!r}).touch()\n'
        'from transformers import Qwen2TokenizerFast as EvilTokenizer\n')
    config = json.loads((tok_dir / 'tokenizer_config.json').read_text())
    config['auto_map'] = {'AutoTokenizer': [None,
                                            'evil_tokenization.EvilTokenizer']}
    (tok_dir / 'tokenizer_config.json').write_text(json.dumps(config))


def test_hf_dir_tokenizer_code_never_runs(tmp_path, tiny_tokenizer_dir):
    """predict --hf-dir / pretrained_hf / export --import-hf read a
    downloaded Hugging Face directory: its tokenizer's auto_map module runs
    only for an InternLM2 LLM (the documented exception), not here (Qwen2)."""
    import shutil

    from projects.sa2va.evaluation.predictor import Sa2VAPredictor
    from tests.hf.helpers import fixture_dir, golden, write_tiny_config
    marker = tmp_path / 'marker'
    hf_dir = Path(shutil.copytree(fixture_dir() / 'checkpoint', tmp_path / 'hf'))
    _evil_tokenizer_code(hf_dir, marker)
    cfg = write_tiny_config(tmp_path / 'tiny_hf.py', tiny_tokenizer_dir,
                            golden()[0]['tiny_sam2'])
    predictor = Sa2VAPredictor.from_hf(str(hf_dir), config=str(cfg))
    assert not marker.exists()
    assert predictor.tokenizer.convert_tokens_to_ids('[SEG]') is not None


# -------------------------------------------------- named loading errors
def _damaged(kind: str, trained, tmp_path) -> Path:
    good = trained[0] / 'iter_6.pth'
    path = tmp_path / f'{kind}.pth'
    data = good.read_bytes()
    if kind == 'empty':
        path.write_bytes(b'')
    elif kind == 'truncated':
        path.write_bytes(data[:len(data) // 2])
    elif kind == 'not_torch':
        path.write_text('{"state_dict": {}}')
    return path


@pytest.mark.parametrize('kind,message', [
    ('empty', 'is empty'), ('truncated', 'not a readable torch checkpoint'),
    ('not_torch', 'not a readable torch checkpoint')])
@pytest.mark.parametrize('resume', [False, True])
def test_damaged_file_is_named(kind, message, resume, trained, tmp_path):
    path = _damaged(kind, trained, tmp_path)
    run = _run_resume if resume else _run_load_from
    with pytest.raises(CheckpointError, match=message) as err:
        run(tmp_path / 'work', path)
    assert str(path) in str(err.value)


def _variant(trained, tmp_path, name, edit) -> Path:
    ckpt = _checkpoint(trained)
    edit(ckpt)
    torch.save(ckpt, tmp_path / name)
    return tmp_path / name


def test_resume_needs_meta_optimizer_and_schedulers(trained, tmp_path):
    cases = {
        'no_meta.pth': (lambda c: c.pop('meta'), 'no meta with epoch'),
        'no_optim.pth': (lambda c: c.pop('optimizer'), 'no optimizer state'),
        'no_sched.pth': (lambda c: c.pop('param_schedulers'),
                         'no param_schedulers'),
        'two_sched.pth': (lambda c: c['param_schedulers'].append(
            c['param_schedulers'][0]), 'holds 2 parameter schedulers'),
    }
    for name, (edit, message) in cases.items():
        path = _variant(trained, tmp_path, name, edit)
        with pytest.raises(CheckpointError, match=message) as err:
            _run_resume(tmp_path / 'work', path)
        assert str(path) in str(err.value)
    # asked for: the weights only, training from iteration 0
    path = tmp_path / 'no_optim.pth'
    runner = _toy_runner(tmp_path / 'w', 'trust_wo', resume=True,
                         load_from=str(path))
    runner.resume_weights_only = True
    runner.load_or_resume()
    assert runner.iter == 0
    weights = torch.load(path, weights_only=True)['state_dict']['fc.weight']
    assert torch.equal(runner.model.fc.weight.detach(), weights)


@pytest.mark.parametrize('flexible', [False, True])
def test_resume_without_checkpoint_in_work_dir(flexible, tmp_path):
    from projects.sa2va.engine.runner import Sa2VAFlexibleRunner
    cls = Sa2VAFlexibleRunner if flexible else None
    with pytest.raises(FileNotFoundError, match='no checkpoint to resume in '
                       'the work dir .*no last_checkpoint'):
        _toy_runner(tmp_path, f'trust_none{flexible}', runner_cls=cls,
                    resume=True).load_or_resume()
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'gone.pth'))
    with pytest.raises(FileNotFoundError, match='gone.pth.*does not exist'):
        _toy_runner(tmp_path, f'trust_gone{flexible}', runner_cls=cls,
                    resume=True).load_or_resume()


@pytest.mark.parametrize('resume', [False, True])
def test_shape_mismatch_is_named(resume, trained, tmp_path):
    path = _variant(trained, tmp_path, 'wide.pth', lambda c: c['state_dict']
                    .__setitem__('fc.weight', torch.zeros(1, 5)))
    run = _run_resume if resume else _run_load_from
    with pytest.raises(CheckpointError, match=r'fc\.weight: file \(1, 5\) vs '
                       r'model \(1, 4\)') as err:
        run(tmp_path / 'work', path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize('value', [float('nan'), float('inf')])
def test_nonfinite_weights_refused_unless_allowed(value, trained, tmp_path):
    def poison(ckpt):
        ckpt['state_dict']['fc.bias'] = torch.full((1,), value)
    path = _variant(trained, tmp_path, 'nonfinite.pth', poison)
    for run in (_run_load_from, _run_resume):
        with pytest.raises(CheckpointError, match=r'NaN or Inf.*fc\.bias'):
            run(tmp_path / 'work', path)
    runner = _toy_runner(tmp_path / 'w', 'trust_nan', load_from=str(path))
    runner.allow_nonfinite_weights = True
    runner.load_or_resume()
    assert not torch.isfinite(runner.model.fc.bias).any()


def test_train_flags_reach_the_runner(tmp_path):
    sys.path.insert(0, str(REPO / 'tools'))
    try:
        from train import build_config, parse_args
    finally:
        sys.path.pop(0)
    config = str(REPO / 'tests' / 'configs' / 'smoke_train.py')
    cfg = build_config(parse_args([config, '--resume', 'x.pth',
                                   '--resume-weights-only',
                                   '--allow-nonfinite-weights']))
    assert cfg.resume_weights_only is True
    assert cfg.allow_nonfinite_weights is True
    from projects.sa2va.engine import Sa2VARunner
    cfg.work_dir = str(tmp_path)
    runner = Sa2VARunner.from_cfg(cfg)
    assert runner.resume_weights_only is True
    assert runner.allow_nonfinite_weights is True
    # a CheckpointHook of the config is built as the plugin's
    assert [type(h).__name__ for h in runner.hooks
            if 'Checkpoint' in type(h).__name__] == ['Sa2VACheckpointHook']
    with pytest.raises(SystemExit, match='needs --resume'):
        build_config(parse_args([config, '--resume-weights-only']))


# ------------------------------------------------------ never lose the last
def test_save_writes_before_it_deletes(tmp_path, monkeypatch):
    """max_keep_ckpts=1: each save is complete and named by last_checkpoint
    before the previous checkpoint is deleted (mmengine deletes first)."""
    events = []
    real_replace, real_remove = os.replace, os.remove

    def replace(src, dst):
        real_replace(src, dst)
        events.append(('complete', Path(dst).name))

    def remove(path):
        if '.tmp-' not in str(path):
            # what a kill now would leave: last_checkpoint names a file
            # that loads
            latest = (tmp_path / 'last_checkpoint').read_text()
            assert torch.load(latest, weights_only=True)['meta']['iter']
            events.append(('delete', Path(path).name))
        real_remove(path)
    monkeypatch.setattr(os, 'replace', replace)
    monkeypatch.setattr(os, 'remove', remove)
    runner = _toy_runner(tmp_path, 'trust_order')
    hook = next(h for h in runner.hooks
                if type(h).__name__ == 'Sa2VACheckpointHook')
    hook.max_keep_ckpts = 1
    runner.train()
    assert events == [
        ('complete', 'iter_3.pth'), ('complete', 'last_checkpoint'),
        ('complete', 'iter_6.pth'), ('complete', 'last_checkpoint'),
        ('delete', 'iter_3.pth'),
        ('complete', 'iter_9.pth'), ('complete', 'last_checkpoint'),
        ('delete', 'iter_6.pth'),
        ('complete', 'iter_10.pth'), ('complete', 'last_checkpoint'),
        ('delete', 'iter_9.pth')]  # save_last at the end
    assert sorted(p.name for p in tmp_path.iterdir()
                  if p.suffix == '.pth') == ['iter_10.pth']
