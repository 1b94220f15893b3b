import math

import pytest
import torch
from torch import nn

from lidarssl.optim import param_groups, warmup_cosine


def test_no_decay_on_1d_params_and_layer_decay_scales():
    net = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    layer = {"0": 0, "1": 1, "2": 2}
    groups = param_groups(net.named_parameters(), 0.1, lambda n: layer[n.split(".")[0]], num_layers=2, layer_decay=0.5)
    by_param = {id(p): g for g in groups for p in g["params"]}
    assert by_param[id(net[0].weight)]["weight_decay"] == 0.1 and by_param[id(net[0].bias)]["weight_decay"] == 0.0
    assert by_param[id(net[1].weight)]["weight_decay"] == 0.0
    assert [by_param[id(net[i].weight)]["lr_scale"] for i in range(3)] == [0.25, 0.5, 1.0]


def test_frozen_params_are_skipped():
    net = nn.Linear(2, 2)
    net.weight.requires_grad_(False)
    groups = param_groups(net.named_parameters(), 0.1)
    assert sum(len(g["params"]) for g in groups) == 1


def test_warmup_then_cosine_to_min_ratio():
    p = nn.Parameter(torch.zeros(2, 2))
    opt = torch.optim.AdamW([{"params": [p], "lr_scale": 0.5}], lr=1.0)
    sched = warmup_cosine(opt, total_steps=10, warmup_steps=4, min_ratio=0.01)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.125, 0.25, 0.375, 0.5])  # linear warmup to lr * lr_scale
    assert lrs[4] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))  # then decays monotonically
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * 0.01)  # reaches min_ratio at total_steps
    mid = 0.5 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 3 / 6)))
    assert lrs[7] == pytest.approx(mid)
