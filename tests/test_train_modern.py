"""The modern recipe's parts, each against what it should compute: EMA against a hand-rolled
average, LAMB against the paper's Algorithm 2, layer-wise LR decay against a hand computation,
RandAugment's per-sample draws, random erasing, the train/test resolution split."""

import math

import pytest
import torch
from torch import nn

import senet
from senet.data.augment import OPS, parse_randaugment, rand_augment, sample_randaugment
from senet.data.erasing import random_erase, sample_erasing
from senet.train import load_config
from senet.train.batches import BatchSteps
from senet.train.ema import build_ema
from senet.train.epoch import _set_lr
from senet.train.lamb import Lamb
from senet.train.optim import build_optimizer, layer_depths
from senet.train.schedule import lr_at


def test_ema_equals_a_hand_rolled_average_of_weights_and_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(2, 3, 6, 6))
    ema = build_ema(model, 0.9)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    keys = [k for k, v in model.state_dict().items() if v.is_floating_point()]
    hand = None
    for _ in range(4):
        loss = model(torch.randn(8, 3, 6, 6)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update_parameters(model)
        now = {k: model.state_dict()[k].clone() for k in keys}
        hand = now if hand is None else {k: 0.9 * hand[k] + 0.1 * now[k] for k in keys}
    got = ema.module.state_dict()
    for k in keys:  # running_mean/var included (use_buffers=True)
        torch.testing.assert_close(got[k], hand[k])
    assert build_ema(model, 0.0) is None


def _lamb_reference(x, grads, lr, b1, b2, eps, wd):
    """Algorithm 2 of You et al. 2019 (phi = identity), written out for one tensor."""
    m, v = torch.zeros_like(x), torch.zeros_like(x)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        r = (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps)
        u = r + wd * x
        x = x - lr * x.norm() / u.norm() * u
    return x


def test_lamb_update_matches_the_papers_formula():
    torch.manual_seed(0)
    w0 = torch.randn(5, 3, dtype=torch.float64)
    target = torch.randn(5, 3, dtype=torch.float64)
    w = nn.Parameter(w0.clone())
    opt = Lamb([w], lr=0.05, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.1, max_grad_norm=0.0)
    grads = []
    for _ in range(5):  # a toy quadratic
        opt.zero_grad()
        ((w - target) ** 2).sum().backward()
        grads.append(w.grad.clone())
        opt.step()
    # The reference replays the same gradients (each depends on the previous iterate).
    torch.testing.assert_close(w.detach(), _lamb_reference(w0, grads, 0.05, 0.9, 0.99, 1e-6, 0.1))


def test_lamb_clips_the_global_gradient_norm_and_skips_the_ratio_without_decay():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = Lamb([{"params": [w], "weight_decay": 0.0}], lr=0.1, betas=(0.0, 0.0), eps=1e-12, max_grad_norm=1.0)
    w.grad = torch.tensor([30.0, 40.0])  # norm 50, scaled to 1; betas 0: r = g / |g| = sign
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([2.9, 3.9]))  # plain Adam step: no trust ratio


def test_layer_decay_scales_each_groups_learning_rate():
    cfg = load_config("bundled", ["optim.layer_decay=0.7", "optim.lr=0.2"])
    model = senet.create_model("se_resnet20")
    opt = build_optimizer(model, cfg.optim)
    depths = layer_depths(model)
    # se_resnet20: stem, 9 blocks, head = depths 0..10 (timm's group_parameters numbering).
    assert depths["conv1.weight"] == 0 and depths["layer1.0.conv1.weight"] == 1 and depths["fc.weight"] == 10
    by_param = {id(p): n for n, p in model.named_parameters()}
    lr = lr_at(3.5, cfg)
    _set_lr(opt, lr)
    for group in opt.param_groups:
        for p in group["params"]:
            want = lr * 0.7 ** (10 - depths[by_param[id(p)]])
            assert math.isclose(group["lr"], want, rel_tol=1e-12)
    # The hand computation for the stem and the block before the head:
    assert math.isclose(opt.param_groups[0]["lr"], lr * 0.7 ** 10)
    # Without layer decay no group carries a scale: the paper's recipe, unchanged.
    plain = build_optimizer(model, load_config("bundled").optim)
    assert all("lr_scale" not in g for g in plain.param_groups)


def test_declared_no_weight_decay_is_honoured_with_the_bias_and_norm_filter():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)
            self.pos = nn.Parameter(torch.zeros(3, 4))

        def no_weight_decay(self):
            return {"pos"}

    cfg = load_config("bundled", ["optim.decay_norm_and_bias=false"]).optim
    opt = build_optimizer(Net(), cfg)
    decayed = [p for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]]
    assert [tuple(p.shape) for p in decayed] == [(2, 4)]  # pos, fc.bias exempt
    # The paper's rule decays everything, as before.
    opt = build_optimizer(Net(), load_config("bundled").optim)
    assert len(opt.param_groups) == 1


def test_randaugment_notation():
    s = parse_randaugment("rand-m7-mstd0.5-inc1")
    assert (s.magnitude, s.num_ops, s.mstd, s.increasing, s.prob) == (7.0, 2, 0.5, True, 0.5)
    assert parse_randaugment("rand-m9-n3").num_ops == 3
    assert math.isinf(parse_randaugment("rand-m9-mstd101").mstd)  # timm: uniform magnitudes in [0, 9]
    assert parse_randaugment("rand-m9-mstd1-mmax8").magnitude_max == 8
    uniform = sample_randaugment(parse_randaugment("rand-m9-mstd101"), 500, torch.Generator().manual_seed(0))
    assert uniform.level.min() >= 0 and uniform.level.max() <= 0.9 and abs(uniform.level.mean().item() - 0.45) < 0.05
    with pytest.raises(ValueError):
        parse_randaugment("auto-m9")
    with pytest.raises(ValueError):
        parse_randaugment("rand-q3")


def test_randaugment_draws_per_sample_ops_and_magnitudes_from_the_generator():
    s = parse_randaugment("rand-m7-mstd0.5-inc1")
    a = sample_randaugment(s, 64, torch.Generator().manual_seed(1))
    b = sample_randaugment(s, 64, torch.Generator().manual_seed(1))
    assert all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("op", "apply", "level", "sign"))
    assert len(set(a.op[:, 0].tolist())) > 5  # per sample, not per batch
    assert a.level.std() > 0 and a.level.min() >= 0 and a.level.max() <= 1
    assert abs(a.level.mean().item() - 0.7) < 0.05
    x = torch.rand(64, 3, 12, 12)
    out = rand_augment(x, a, s, (0.5, 0.5, 0.5))
    # Samples that drew no applied op are untouched; the others apply their own drawn ops.
    untouched = ~a.apply.any(1)
    assert torch.equal(out[untouched], x[untouched])
    i = int(torch.nonzero(a.apply[:, 0] & ~a.apply[:, 1] & (a.op[:, 0] == OPS.index("Invert")))[0])
    torch.testing.assert_close(out[i], 1 - x[i])


def test_random_erasing_fills_one_box_with_noise():
    g = torch.Generator().manual_seed(0)
    p = sample_erasing(32, 16, 16, 0.5, g)
    x = torch.full((32, 3, 16, 16), 7.0)
    out = random_erase(x, p, torch.Generator().manual_seed(1))
    for i in range(32):
        changed = (out[i] != 7.0).any(0)
        if p.erase[i]:
            y0, y1, x0, x1 = p.box[i].tolist()
            area = (y1 - y0) * (x1 - x0)
            assert changed.sum() == area and changed[y0:y1, x0:x1].all()
            assert 0.02 * 256 - 1 <= area <= 256 / 3 + 16
        else:
            assert not changed.any()
    assert 0 < int(p.erase.sum()) < 32


def test_train_resolution_differs_from_the_test_resolution():
    cfg = load_config("bundled", ["data.train_image_size=24"])
    steps = BatchSteps.for_epoch(cfg, 0, 0, (0.5,) * 3, (0.25,) * 3, 10, torch.device("cpu"))
    x, t = steps.apply(torch.randn(4, 3, 32, 32), torch.arange(4))
    assert x.shape == (4, 3, 24, 24) and t is None
    # Everything off: the loaded batch itself.
    off = BatchSteps.for_epoch(load_config("bundled"), 0, 0, (0.5,) * 3, (0.25,) * 3, 10, torch.device("cpu"))
    xb = torch.randn(4, 3, 32, 32)
    assert off.apply(xb, torch.arange(4))[0] is xb and not off.active


def test_repeated_augmentation_order():
    from senet.data.repeated import repeated_order
    from senet.data.seeding import shard_order

    one = repeated_order(12, seed=0, epoch=1, repeats=3)
    assert len(one) == 12 and torch.equal(one[0::3], one[1::3]) and torch.equal(one[0::3], one[2::3])
    assert len(set(one.tolist())) == 4  # a third of the distinct samples, each three times
    # Two ranks: the copies of a sample are dealt to both ranks; together they cover the single-rank order.
    r0, r1 = (repeated_order(12, seed=0, epoch=1, rank=r, world_size=2, repeats=3) for r in (0, 1))
    assert len(r0) == len(r1) == 6
    both = torch.stack([r0, r1], 1).flatten()
    assert torch.equal(both, one)  # rank r takes entries r, r + 2, ... of the single-rank order
    assert set(r0.tolist()) & set(r1.tolist())  # the same sample on both ranks
    # repeats=1 keeps the loaders' usual order.
    from senet.data import load_dataset, make_loader
    ds = load_dataset("synthetic:40:3x8x8", "train")
    plain = make_loader(ds, 8, train=True, seed=0)
    assert torch.equal(plain._order(), shard_order(40, seed=0, epoch=0)[: plain.num_samples])
    rep = make_loader(ds, 8, train=True, seed=0, repeats=4)
    order = rep._order()
    assert len(order) == plain.num_samples and torch.equal(order[0::4], order[3::4])


def test_drop_path_rate_is_passed_to_create_model(monkeypatch):
    from senet.data import load_dataset
    from senet.train import setup as setup_mod

    seen = []
    real = setup_mod.create_model
    monkeypatch.setattr(setup_mod, "create_model", lambda name, **kw: seen.append(kw) or real(name))
    ds = load_dataset("bundled", "test")
    setup_mod.build_model(load_config("bundled", ["model.drop_path_rate=0.1"]), ds)
    setup_mod.build_model(load_config("bundled"), ds)
    assert seen[0]["drop_path_rate"] == 0.1 and "drop_path_rate" not in seen[1]  # 0: today's call, unchanged


def test_drop_path_rate_trains():
    from senet.train import fit
    from senet.train.progress import Reporter

    cfg = load_config("bundled", ["model.drop_path_rate=0.1", "epochs=1", "data.dataset=synthetic:64:3x32x32",
                                  "batch_size=32", "threads=1"])
    result = fit(cfg, None, device="cpu", reporter=Reporter())
    assert math.isfinite(result.final["train_loss"])


def test_senet_train_with_layer_decay_gives_the_hand_computed_group_learning_rates(tmp_path):
    from senet.cli import main

    run = tmp_path / "run"
    args = ["train", "--set", "optim.layer_decay=0.7", "--set", "data.dataset=synthetic:64:3x32x32",
            "--set", "schedule.name=constant", "--set", "schedule.warmup_epochs=0", "--set", "threads=1", "--epochs", "1", "--batch-size", "32",
            "--lr", "0.05", "--device", "cpu", "--out", str(run)]
    assert main(args) == 0
    state = torch.load(run / "checkpoints/last_state.pt", weights_only=True)
    groups = state["optimizer"]["param_groups"]
    # se_resnet20: depths 0 (stem) .. 10 (head); a constant schedule leaves lr * 0.7 ** (10 - depth).
    assert [round(g["lr"], 10) for g in groups] == [round(0.05 * 0.7 ** (10 - d), 10) for d in range(11)]
    assert [g["lr_scale"] for g in groups] == [0.7 ** (10 - d) for d in range(11)]


def test_new_fields_are_checked_and_default_to_the_papers_recipe():
    from senet.train.config import ConfigError, TrainConfig

    cfg = TrainConfig()
    assert (cfg.mix.active, cfg.loss, cfg.ema_decay, cfg.data.randaugment, cfg.data.reprob, cfg.data.aug_repeats,
            cfg.data.train_image_size, cfg.optim.layer_decay, cfg.model.drop_path_rate) == (
        False, "ce", 0.0, "", 0.0, 1, None, None, 0.0)
    for bad, key in (("data.randaugment=rand-x9", "data.randaugment"), ("mix.mode=pair", "mix.mode"),
                     ("loss=mse", "loss"), ("ema_decay=1.0", "ema_decay"), ("optim.layer_decay=0", "optim.layer_decay"),
                     ("optim.name=lion", "optim.name")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config("bundled", [bad])


def test_repeated_copies_from_an_image_folder_are_cropped_differently(tmp_path):
    from PIL import Image

    from senet.data import load_dataset, make_loader

    for label, name in enumerate(("cat", "dog")):
        for i in range(3):
            for split in ("train", "val"):
                path = tmp_path / split / name / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray((torch.rand(40, 48, 3) * 255).to(torch.uint8).numpy()).save(path)
    train = load_dataset(str(tmp_path), "train", image_size=16)
    loader = make_loader(train, 6, train=True, seed=1, num_workers=0, repeats=3)
    x, y = next(iter(loader))
    # Consecutive triples are the same image; each copy draws its own random-size crop and flip.
    assert torch.equal(y[0:3], y[0].expand(3)) and not torch.equal(x[0], x[1]) and not torch.equal(x[1], x[2])


def test_lars_step_matches_the_papers_local_learning_rate():
    from senet.train.lars import Lars

    torch.manual_seed(0)
    w0, g1, g2 = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64), torch.randn(
        4, 3, dtype=torch.float64)
    w = nn.Parameter(w0.clone())
    opt = Lars([w], lr=0.5, momentum=0.9, weight_decay=0.01, trust_coeff=0.02, eps=0.0)
    x, buf = w0.clone(), None
    for g in (g1, g2):
        w.grad = g.clone()
        opt.step()
        # You et al. 2017, eq. 6: local lr = eta ||w|| / (||g|| + wd ||w||), on g + wd w; then momentum SGD.
        local = 0.02 * x.norm() / (g.norm() + 0.01 * x.norm())
        step = local * (g + 0.01 * x)
        buf = step if buf is None else 0.9 * buf + step
        x = x - 0.5 * buf
    torch.testing.assert_close(w.detach(), x)


def test_image_folders_train_at_the_train_side_and_the_card_keeps_the_test_side(tmp_path):
    from PIL import Image

    from senet.train.setup import build_model, image_size, load_data

    for split in ("train", "val"):
        for name in ("cat", "dog"):
            path = tmp_path / split / name / "0.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((torch.rand(40, 48, 3) * 255).to(torch.uint8).numpy()).save(path)
    cfg = load_config("bundled", [f"data.dataset={tmp_path}", "data.image_size=24", "data.train_image_size=16"])
    train, test = load_data(cfg, image_size(cfg))
    assert train.image_size == 16 and test.image_size == 24
    assert train[0][0].shape == (3, 16, 16)
    _, card = build_model(cfg, train)
    assert card.input_size == (3, 24, 24) and card.crop_pct == 0.875 and card.crop_mode == "center"
    # RSB tests at a crop fraction of 0.95: the card records it, and the test split is built from the card.
    cfg = load_config("bundled", [f"data.dataset={tmp_path}", "data.image_size=24", "data.eval_crop_pct=0.95"])
    _, card = build_model(cfg, train)
    assert card.crop_pct == 0.95 and card.eval_transform().crop_pct == 0.95
    with pytest.raises(ValueError, match="eval_crop_pct"):
        load_config("bundled", ["data.eval_crop_pct=1.5"])
