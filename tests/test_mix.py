"""Mixup/CutMix targets and images against hand computations; the BCE loss on mixed targets."""

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from senet.data.mix import MixParams, MixSettings, mix_images, mix_targets, sample_mix, smooth_targets
from senet.train.loss import binary_cross_entropy, soft_cross_entropy, training_loss


def test_mixup_targets_match_hand_computation_and_sum_to_one():
    y = torch.tensor([0, 2, 1])
    lam = torch.tensor([0.7, 0.7, 0.7])
    t = mix_targets(y, 4, lam, smoothing=0.1)
    # Label smoothing 0.1 over 4 classes: 0.925 on the label, 0.025 elsewhere; partner = reversed batch.
    on, off = 1 - 0.1 + 0.025, 0.025
    s0 = torch.tensor([on, off, off, off])   # label 0
    s2 = torch.tensor([off, off, on, off])   # label 2
    s1 = torch.tensor([off, on, off, off])   # label 1
    want = torch.stack([0.7 * s0 + 0.3 * s1, 0.7 * s2 + 0.3 * s2, 0.7 * s1 + 0.3 * s0])
    torch.testing.assert_close(t, want)
    torch.testing.assert_close(t.sum(1), torch.ones(3))


def test_mixup_images_blend_with_the_reversed_batch():
    x = torch.arange(2 * 1 * 2 * 2, dtype=torch.float32).view(2, 1, 2, 2)
    p = MixParams(torch.tensor([0.25, 0.25]), torch.tensor([False, False]), torch.zeros(2, 4, dtype=torch.int64))
    out = mix_images(x, p)
    torch.testing.assert_close(out[0], 0.25 * x[0] + 0.75 * x[1])
    torch.testing.assert_close(out[1], 0.25 * x[1] + 0.75 * x[0])


def test_cutmix_pastes_the_partners_box_and_lam_is_its_area():
    s = MixSettings(cutmix_alpha=1.0, mode="elem")
    params = sample_mix(s, 4, 8, 8, np.random.default_rng(3))
    assert params.cutmix.all()
    x = torch.stack([torch.full((1, 8, 8), float(i)) for i in range(4)])
    out = mix_images(x, params)
    for i in range(4):
        y0, y1, x0, x1 = params.box[i].tolist()
        inside = torch.zeros(8, 8, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        assert (out[i, 0][inside] == 3 - i).all() and (out[i, 0][~inside] == i).all()
        # lam is corrected to the pasted area (after clipping at the border), as timm's correct_lam.
        assert math.isclose(float(params.lam[i]), 1 - inside.sum().item() / 64, rel_tol=1e-6)
    t = mix_targets(torch.arange(4), 4, params.lam)
    torch.testing.assert_close(t.sum(1), torch.ones(4))
    # The fraction of each image's pixels from its partner is the weight of the partner's label.
    for i in range(4):
        assert math.isclose(float(t[i, 3 - i]), float((out[i, 0] == 3 - i).float().mean()), rel_tol=1e-6)


def test_batch_mode_uses_one_ratio_elem_mode_one_per_sample():
    rng = np.random.default_rng(0)
    batch = sample_mix(MixSettings(mixup_alpha=0.8, cutmix_alpha=1.0), 16, 32, 32, rng)
    assert len(set(batch.lam.tolist())) == 1 and len(set(batch.cutmix.tolist())) == 1
    elem = sample_mix(MixSettings(mixup_alpha=0.8, cutmix_alpha=1.0, mode="elem"), 16, 32, 32, rng)
    assert len(set(elem.lam.tolist())) > 1 and 0 < int(elem.cutmix.sum()) < 16


def test_mixing_is_a_pure_function_of_the_seed():
    s = MixSettings(mixup_alpha=0.8, cutmix_alpha=1.0, mode="elem")
    a = sample_mix(s, 8, 16, 16, np.random.default_rng(7))
    b = sample_mix(s, 8, 16, 16, np.random.default_rng(7))
    assert all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("lam", "cutmix", "box"))


def test_prob_zero_leaves_the_batch_alone():
    p = sample_mix(MixSettings(mixup_alpha=1.0, prob=0.0, mode="elem"), 5, 4, 4, np.random.default_rng(0))
    x = torch.randn(5, 3, 4, 4)
    assert torch.equal(mix_images(x, p), x) and (p.lam == 1).all()


def test_bce_on_mixed_targets_matches_hand_computation():
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    t = torch.tensor([[0.6, 0.3, 0.1]])
    sig = torch.sigmoid(logits)
    want = -(t * sig.log() + (1 - t) * (1 - sig).log()).mean()
    torch.testing.assert_close(binary_cross_entropy(logits, t), want)
    # threshold 0.2: targets 0.6 and 0.3 become 1, 0.1 becomes 0 (timm's target_threshold)
    hard = torch.tensor([[1.0, 1.0, 0.0]])
    want_thr = -(hard * sig.log() + (1 - hard) * (1 - sig).log()).mean()
    torch.testing.assert_close(binary_cross_entropy(logits, t, threshold=0.2), want_thr)


def test_training_loss_paths():
    torch.manual_seed(0)
    z, y = torch.randn(6, 5), torch.randint(5, (6,))
    # No mixing, CE: exactly torch's cross-entropy (the paper's recipe unchanged).
    assert torch.equal(training_loss(z, y, None, label_smoothing=0.1), F.cross_entropy(z, y, label_smoothing=0.1))
    # Soft CE on smoothed one-hot targets equals torch's label-smoothed CE.
    torch.testing.assert_close(soft_cross_entropy(z, smooth_targets(y, 5, 0.1)), F.cross_entropy(z, y, label_smoothing=0.1))
    # BCE without mixing smooths the labels itself.
    torch.testing.assert_close(training_loss(z, y, None, loss="bce", label_smoothing=0.1),
                               F.binary_cross_entropy_with_logits(z, smooth_targets(y, 5, 0.1)))
    with pytest.raises(ValueError, match="loss"):
        training_loss(z, y, None, loss="mse")
