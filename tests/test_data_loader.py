"""Device-resident loaders: seeded order and augmentation, sharding, batch transforms (§5.1)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from senet.data import ArrayDataset, AugmentConfig, load_dataset, make_loader, shard_order
from senet.data.transforms import cutout, hflip, random_crop, sample_augment

NO_AUG = AugmentConfig(crop_padding=0, flip=False)


def indexed(n: int, channels: int = 1, size: int = 4) -> ArrayDataset:
    """Image i is the constant i and its label i % 10: batches reveal which samples they hold."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, channels, size, size).contiguous()
    return ArrayDataset(images, torch.arange(n) % 10, [str(c) for c in range(10)], "indexed", (0.0,) * channels,
                        (1 / 255,) * channels)


def seen(loader) -> list[int]:  # noqa: ANN001
    return [int(v) for x, _ in loader for v in x[:, 0, 0, 0].round()]


def batches(loader, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:  # noqa: ANN001
    loader.set_epoch(epoch)
    return [(x.clone(), y.clone()) for x, y in loader]


def assert_same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_epoch_is_a_pure_function_of_seed_epoch_rank() -> None:
    data = load_dataset("synthetic:200", "train")
    aug = AugmentConfig(crop_padding=4, flip=True, cutout=8)
    straight = make_loader(data, 32, train=True, seed=5, augment=aug)
    history = [batches(straight, e) for e in range(4)]
    # A fresh loader (a resumed run) jumping to epoch 3 after unrelated use of the global RNG.
    torch.manual_seed(1234)
    torch.rand(17)
    resumed = make_loader(data, 32, train=True, seed=5, augment=aug)
    assert_same(batches(resumed, 3), history[3])
    assert_same(batches(resumed, 1), history[1])  # and back: order of calls does not matter
    assert not torch.equal(history[0][0][0], history[1][0][0])
    other_seed = make_loader(data, 32, train=True, seed=6, augment=aug)
    assert not torch.equal(batches(other_seed, 0)[0][0], history[0][0][0])


def test_loaders_leave_the_global_rng_alone() -> None:
    data = load_dataset("synthetic:100", "train")
    state = torch.get_rng_state()
    for train in (True, False):
        loader = make_loader(data, 16, train=train, seed=0)
        loader.set_epoch(2)
        list(loader)
    assert torch.equal(torch.get_rng_state(), state)


def test_training_order_is_a_shuffled_permutation() -> None:
    loader = make_loader(indexed(100), 10, train=True, augment=NO_AUG)
    order = seen(loader)
    assert sorted(order) == list(range(100)) and order != list(range(100))
    assert loader.num_samples == 100 and len(loader) == 10


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_get_disjoint_equal_shares(world_size: int) -> None:
    n = 100
    loaders = [make_loader(indexed(n), 8, train=True, augment=NO_AUG, rank=r, world_size=world_size, seed=3)
               for r in range(world_size)]
    shares = []
    for loader in loaders:
        loader.set_epoch(1)
        shares.append(seen(loader))
    assert len({len(loader) for loader in loaders}) == 1  # DDP: every rank runs the same number of steps
    assert all(len(s) == loaders[0].num_samples for s in shares)
    share = -(-n // world_size)
    assert loaders[0].num_samples == share // 8 * 8 and loaders[0].padding == share * world_size - n
    # Without drop_last the shares cover every sample, repeating only the padding.
    full = [seen(make_loader(indexed(n), 8, train=True, augment=NO_AUG, rank=r, world_size=world_size, seed=3,
                             drop_last=False)) for r in range(world_size)]
    assert all(len(s) == share for s in full)
    everything = sum(full, [])
    assert sorted(set(everything)) == list(range(n)) and len(everything) - n == share * world_size - n
    # The shares interleave the single-process order, padded with its head.
    single = shard_order(n, seed=3, epoch=0).tolist()
    ranks = [shard_order(n, seed=3, epoch=0, rank=r, world_size=world_size).tolist() for r in range(world_size)]
    interleaved = [ranks[i % world_size][i // world_size] for i in range(share * world_size)]
    assert interleaved == single + single[: share * world_size - n]


def test_ranks_together_show_the_single_process_epoch() -> None:
    # Same seed and epoch: the ranks' augmented samples interleave into the one-process batch.
    data = load_dataset("synthetic:60", "train")
    aug = AugmentConfig(crop_padding=4, flip=True, cutout=6)
    single = batches(make_loader(data, 60, train=True, seed=2, augment=aug), 3)[0]
    for world_size in (2, 3):
        shares = [batches(make_loader(data, 60 // world_size, train=True, seed=2, augment=aug, rank=r,
                                      world_size=world_size), 3)[0] for r in range(world_size)]
        x = torch.stack([s[0] for s in shares], 1).flatten(0, 1)
        y = torch.stack([s[1] for s in shares], 1).flatten(0, 1)
        assert torch.equal(x, single[0]) and torch.equal(y, single[1])


def test_eval_loader_keeps_order_and_every_sample_without_augmentation() -> None:
    data = load_dataset("synthetic:100", "test")  # 20 images
    loader = make_loader(data, 8, train=False, augment=AugmentConfig(cutout=4))
    xs, ys = zip(*batches(loader, 7))
    assert [len(y) for y in ys] == [8, 8, 4] and len(loader) == 3 and loader.num_samples == 20
    mean, std = torch.tensor(data.mean).view(1, -1, 1, 1), torch.tensor(data.std).view(1, -1, 1, 1)
    expected = (data.images.float() / 255 - mean) / std
    assert torch.allclose(torch.cat(xs), expected, atol=1e-6) and torch.equal(torch.cat(ys), data.labels)
    assert_same(batches(loader, 0), list(zip(xs, ys)))
    # Sharded evaluation visits the dataset order rank by rank, with equal batch counts.
    ranks = [make_loader(indexed(21), 4, train=False, rank=r, world_size=2) for r in range(2)]
    assert [seen(r) for r in ranks] == [list(range(0, 21, 2)), list(range(1, 21, 2)) + [0]]
    assert len(ranks[0]) == len(ranks[1]) == 3 and ranks[0].padding == 1


def test_drop_last_and_batch_size_errors() -> None:
    data = indexed(50)
    train = make_loader(data, 16, train=True)
    assert len(train) == 3 and train.num_samples == 48 and len(seen(train)) == 48
    keep = make_loader(data, 16, train=True, drop_last=False)
    assert len(keep) == 4 and keep.num_samples == 50 and len(seen(keep)) == 50
    with pytest.raises(ValueError, match="batch_size=64 exceeds the 50 samples"):
        make_loader(data, 64, train=True)
    with pytest.raises(ValueError, match="rank"):
        make_loader(data, 8, train=True, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(data, 0, train=False)
    with pytest.raises(ValueError, match="epoch"):
        train.set_epoch(-1)
    with pytest.raises(TypeError, match="ArrayDataset or ImageFolderDataset"):
        make_loader([1, 2, 3], 2, train=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="AugmentConfig.crop_padding"):
        AugmentConfig(crop_padding=-1)


def test_random_crop_matches_slicing_the_padded_image() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 3, 8, 10), dtype=torch.uint8, generator=g)
    dy, dx = torch.randint(0, 9, (6,), generator=g), torch.randint(0, 9, (6,), generator=g)
    out = random_crop(x, 4, dy, dx)
    padded = F.pad(x, (4, 4, 4, 4))
    for i in range(6):
        assert torch.equal(out[i], padded[i, :, dy[i] : dy[i] + 8, dx[i] : dx[i] + 10])
    assert torch.equal(random_crop(x, 4, torch.full((6,), 4), torch.full((6,), 4)), x)  # centre = identity


def test_flip_and_cutout() -> None:
    x = torch.arange(2 * 1 * 4 * 5, dtype=torch.float32).view(2, 1, 4, 5)
    flipped = hflip(x, torch.tensor([True, False]))
    assert torch.equal(flipped[0], x[0].flip(-1)) and torch.equal(flipped[1], x[1])
    ones = torch.ones(3, 2, 10, 10)
    holes = cutout(ones, 4, torch.tensor([5, 0, 9]), torch.tensor([5, 0, 5]))
    assert (holes[0] == 0).sum() == 2 * 16  # inside: the full square, on every channel
    assert (holes[1] == 0).sum() == 2 * 4  # a corner centre: a quarter of it
    assert (holes[2] == 0).sum() == 2 * 3 * 4  # rows 7..10 of a 10-row image: 3 of 4 rows
    assert torch.equal(cutout(ones, 0, torch.tensor([5] * 3), torch.tensor([5] * 3)), ones)


def test_training_batches_are_shifted_flipped_copies() -> None:
    data = load_dataset("synthetic:64", "train")
    loader = make_loader(data, 64, train=True, augment=AugmentConfig(crop_padding=2, flip=True))
    x, y = next(iter(loader))
    order = shard_order(64, seed=0, epoch=0)
    assert torch.equal(y, data.labels[order])
    mean, std = torch.tensor(data.mean).view(1, -1, 1, 1), torch.tensor(data.std).view(1, -1, 1, 1)
    raw = ((x * std + mean) * 255).round().to(torch.uint8)
    padded = F.pad(data.images[order], (2, 2, 2, 2))
    flips = 0
    for i in range(64):
        views = [padded[i, :, a : a + 32, b : b + 32] for a in range(5) for b in range(5)]
        straight = any(torch.equal(raw[i], v) for v in views)
        mirrored = any(torch.equal(raw[i], v.flip(-1)) for v in views)
        assert straight or mirrored
        flips += mirrored and not straight
    assert 16 < flips < 48  # about half mirrored


def test_sampled_augmentation_ranges() -> None:
    p = sample_augment(1000, 28, 30, AugmentConfig(crop_padding=3), torch.Generator().manual_seed(0))
    assert p.dy.min() == 0 and p.dy.max() == 6 and p.dx.max() == 6
    assert 0 <= p.cy.min() and p.cy.max() == 27 and p.cx.max() == 29
    assert 400 < int(p.flip.sum()) < 600


def test_grey_28x28_batches_feed_an_se_network() -> None:
    import senet

    data = load_dataset("fashion-mnist-mini", "test")
    x, y = next(iter(make_loader(data, 8, train=True, seed=0)))
    assert x.shape == (8, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    model = senet.create_model("se_resnet20", in_chans=1, num_classes=len(data.classes))
    assert model(x).shape == (8, 10)


def test_synthetic_data_is_learnable() -> None:
    train, test = load_dataset("synthetic:500", "train"), load_dataset("synthetic:500", "test")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loader = make_loader(train, 50, train=True, augment=NO_AUG)
    for epoch in range(2):
        loader.set_epoch(epoch)
        for x, y in loader:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in make_loader(test, 50, train=False))
    assert correct / len(test) > 0.5  # chance is 0.1
