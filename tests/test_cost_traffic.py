"""Bytes read and written (senet.cost.counting, docs/cost.md): one residual unit against a hand count."""

from __future__ import annotations

import pytest

from senet import complexity, create_model
from senet.cli import main

pytest.importorskip("triton")  # the fused path's traffic comes from the kernels' own plans

N, C, HW, B = 2, 16, 8 * 8, 4  # se_resnet20's first unit on an 8x8 input, fp32
E = N * C * HW * B  # one activation of the unit
NC = N * C * B  # one value per (sample, channel): the squeeze z and the excitation s
# The excitation of SqueezeExcite(16, r=16): FC 16 -> 1 -> 16 with biases, run as matrix products.
FC1 = (NC + C * 1 * B + 1 * B) + N * 1 * B  # read z, W1, b1; write h
RELU = 2 * N * 1 * B  # in place: read h, write h
FC2 = (N * 1 * B + 1 * C * B + C * B) + NC  # read h, W2, b2; write the logits
SIGMOID = 2 * NC
EXCITATION = FC1 + RELU + FC2 + SIGMOID


@pytest.fixture(scope="module")
def counts():
    return {(se, kind): complexity(create_model("se_resnet20", **({} if se else {"se": None})), (3, 8, 8),
                                   traffic=True, batch=N).traffic[kind].units["layer1.0"]
            for se in (True, False) for kind in ("infer eager", "infer fused", "train fused")}


def test_inference_eager_unit_matches_hand_count(counts):
    # pool (read E, write z), excitation, then out.mul_(s) in place (read E and s, write E);
    # the add and ReLU that follow are the plain unit's too.
    se_part = (E + NC) + EXCITATION + (E + NC + E)
    assert counts[True, "infer eager"] - counts[False, "infer eager"] == se_part


def test_inference_fused_unit_matches_hand_count(counts):
    # squeeze kernel (read E, write z), excitation, and the apply kernel reads s besides u and the
    # shortcut (3E, as the plain unit's add+ReLU kernel): SE adds one read of the activation.
    se_part = (E + NC) + EXCITATION + NC
    assert counts[True, "infer fused"] - counts[False, "infer fused"] == se_part


def test_training_fused_unit_adds_four_activations(counts):
    # Forward: the squeeze reads E. Backward: the plain unit's kernel reads g and y and writes g'
    # (3E); the SE unit's reads g, y and u and writes g' (4E), then grad_u = g' * s + grad_z / HW
    # reads g' and writes grad_u (2E). 1E + 3E, plus the excitation's few hundred bytes.
    extra = counts[True, "train fused"] - counts[False, "train fused"]
    assert 4 * E < extra < 4 * E + 4 * EXCITATION


def test_summary_prints_bytes_and_se_share(capsys):
    assert main(["summary", "se_resnet20", "--baseline", "--bytes", "--bytes-dtype", "fp32", "--input-size", "8",
                 "--no-parts"]) == 0
    out = capsys.readouterr().out
    assert "bytes read + written (float32, batch 1)" in out and "train fused" in out
    assert "SE's share: multiply-adds" in out and "| bytes infer eager" in out
