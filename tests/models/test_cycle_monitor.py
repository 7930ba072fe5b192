"""Teacher statistics and the caption-path gradient probe of the cycle."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from projects.sa2va.models.cycle_monitor import GradProbe, teacher_stats


def test_teacher_stats_by_hand():
    teacher = dict(lengths=torch.tensor([3, 5]), stopped=torch.tensor([True, False]),
                   counts=torch.tensor([0, 4]))
    chosen = torch.zeros(2, 8, dtype=torch.bool)
    chosen[0, 1] = chosen[1, 4] = True
    st = {k: float(v) for k, v in teacher_stats(teacher, 8, chosen).items()}
    assert st == dict(cap_len=4.0, cap_eos_rate=0.5, cap_eos_pos=3.0,
                      cap_non_pad_frac=0.5, k0_rate=0.5, corrupt_rate=0.25)
    none = teacher_stats(dict(teacher, stopped=torch.tensor([False, False])), 8, chosen)
    assert float(none['cap_eos_pos']) == 0.0


def test_grad_probe_records_one_backward_per_group_and_watched_tensor():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    probe = GradProbe(model, dict(first='0.', second='1.weight'))
    x = torch.randn(5, 3)
    model(x).sum().backward()                    # not started: nothing recorded
    assert probe.stop() == {}
    model.zero_grad()
    probe.start()
    probe.kind = 'ref'
    hidden = model[0](x)
    probe.watch('hidden', hidden)
    model[1](hidden).pow(2).sum().backward()
    norms = probe.stop()
    first = torch.cat([p.grad.flatten() for p in model[0].parameters()]).norm()
    assert norms['grad_ref_first'] == pytest.approx(float(first), rel=1e-6)
    assert norms['grad_ref_second'] == pytest.approx(float(model[1].weight.grad.norm()),
                                                     rel=1e-6)
    assert set(norms) == {'grad_ref_first', 'grad_ref_second', 'grad_ref_hidden'}
    model.zero_grad()
    model(x).sum().backward()                    # hooks removed by stop()
    assert probe.stop() == {}
    probe.start(params=False)                   # watched tensors only (dual loop)
    model(x).sum().backward()
    assert probe.stop() == {}
