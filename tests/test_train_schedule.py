"""Pure schedule, parameter-group and metric functions."""

import math

import pytest
import torch
from torch import nn

from senet.train import TrainConfig, apply_overrides, lr_at, param_groups
from senet.train.metrics import batch_counts, summarize
from senet.train.optim import build_optimizer


def cfg(*items):
    return apply_overrides(TrainConfig(), list(items))


def test_step_schedule_divides_by_ten_every_30_epochs():  # paper §5.1
    c = cfg("optim.lr=0.6", "schedule.name=step", "schedule.step_size=30", "epochs=100")
    assert [lr_at(e, c) for e in (0, 29.99)] == [0.6, 0.6]
    assert lr_at(30, c) == pytest.approx(0.06) and lr_at(60, c) == pytest.approx(0.006)
    assert lr_at(99.5, c) == pytest.approx(0.0006)


def test_multistep_cosine_and_warmup():
    m = cfg("optim.lr=0.1", "schedule.name=multistep", "schedule.milestones=[60, 120, 160]", "schedule.gamma=0.2")
    assert [round(lr_at(e, m), 6) for e in (59, 60, 130, 170)] == [0.1, 0.02, 0.004, 0.0008]
    c = cfg("optim.lr=1.0", "schedule.name=cosine", "epochs=10", "schedule.min_lr=0.1")
    assert lr_at(0, c) == 1.0 and lr_at(5, c) == pytest.approx(0.55) and lr_at(10, c) == pytest.approx(0.1)
    w = cfg("optim.lr=1.0", "schedule.name=cosine", "epochs=11", "schedule.warmup_epochs=1",
            "schedule.warmup_start_factor=0.1")
    assert lr_at(0, w) == pytest.approx(0.1) and lr_at(0.5, w) == pytest.approx(0.55)
    assert lr_at(1, w) == 1.0 and lr_at(6, w) == pytest.approx(0.5)
    assert lr_at(3, cfg("schedule.name=constant", "optim.lr=0.3")) == 0.3
    with pytest.raises(ValueError, match="schedule.name"):
        lr_at(0, cfg("schedule.name=exp"))


def test_param_groups_exempt_norm_and_bias_only_when_asked():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 5, 5))
    named = list(model.named_parameters())
    all_decay = param_groups(named, 1e-4, True)
    assert len(all_decay) == 1 and len(all_decay[0]["params"]) == len(named)
    split = param_groups(named, 1e-4, False)
    assert [g["weight_decay"] for g in split] == [1e-4, 0.0]
    assert [p.ndim for p in split[0]["params"]] == [4, 2] and all(p.ndim == 1 for p in split[1]["params"])


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                       ("adamw", torch.optim.AdamW), ("rmsprop", torch.optim.RMSprop)])
def test_build_optimizer(name, cls):
    c = cfg(f"optim.name={name}", "optim.nesterov=true")
    opt = build_optimizer(nn.Linear(3, 2), c.optim)
    assert isinstance(opt, cls)
    if name == "sgd":
        assert opt.param_groups[0]["nesterov"] and opt.param_groups[0]["momentum"] == 0.9


def test_batch_counts_top1_top5():
    logits = torch.tensor([[9.0, 8, 7, 6, 5, 4, 0], [0, 1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1, 0]])
    y = torch.tensor([0, 0, 5])  # top-1 hit; miss (rank 7); top-5 miss; top-5 miss (rank 6)
    m = summarize(batch_counts(logits, y, torch.tensor(3.0)))
    assert m["loss"] == 1.0 and m["top1_err"] == pytest.approx(200 / 3) and m["top5_err"] == pytest.approx(200 / 3)
    y = torch.tensor([1, 2, 0])  # rank 2, rank 5 (the last of the top 5), rank 1
    m = summarize(batch_counts(logits, y, torch.tensor(0.0)))
    assert math.isclose(m["top1_err"], 200 / 3) and m["top5_err"] == 0.0 and m["acc"] == pytest.approx(100 / 3)


def test_every_schedule_name_has_its_factor():
    from senet.train.choices import SCHEDULES
    from senet.train.schedule import FACTORS

    assert set(FACTORS) == set(SCHEDULES)
