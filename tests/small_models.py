"""One small SE network per architecture of the registry, for tests that must run every family.

The cases are derived from the registry (one per builder and block/stem/variant), so a new
family added to the registry is tested without editing this list; depth is cut to one unit per
stage where the builder allows it, and the classifier has few classes.
"""

from __future__ import annotations

import torch

import senet
from senet.models.registry import get_model_spec

# What makes two registered models the same architecture for these tests.
_KEYS = ("block", "variant", "stem", "shortcut", "norm", "head")


def family_cases() -> list[tuple[str, dict]]:
    """``(name, create_model overrides)`` for one SE model of each architecture."""
    seen: dict[tuple, str] = {}
    for name in sorted(senet.list_models(), key=lambda n: (n.startswith("legacy_"), n)):
        spec = get_model_spec(name)
        if not spec.has_se:
            continue
        key = (spec.builder.__name__, *(spec.defaults.get(k) for k in _KEYS))
        seen.setdefault(key, name)
    cases = []
    for name in sorted(seen.values()):
        spec = get_model_spec(name)
        overrides: dict = {"num_classes": 5, "drop_rate": 0.2}
        layers = spec.defaults.get("layers")
        if spec.builder.__name__ in ("ResNet", "DenseNet") and layers is not None:
            overrides["layers"] = (1,) * len(layers)
        elif spec.builder.__name__ == "VGG":
            overrides.update(layers=(16, "M", 32, "M"), mlp_width=32)
        cases.append((name, overrides))
    return cases


def _short_inception_resnet(name: str, overrides: dict) -> torch.nn.Module:
    # No depth argument, and 55M weights take long to initialise: build the shapes on the meta
    # device, keep one block of each repeated stage, then allocate and initialise what is left.
    from senet.models.common import he_init

    with torch.device("meta"):
        model = senet.create_model(name, **overrides)
    for stage in ("repeat", "repeat_1", "repeat_2"):
        setattr(model, stage, getattr(model, stage)[:1])
    model.to_empty(device="cpu")
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    he_init(model)
    return model


def small_model(name: str, overrides: dict, seed: int = 0) -> tuple[torch.nn.Module, int]:
    """The model in eval mode with non-trivial BN statistics and affine parameters (drawn near
    their trained ranges, seeded), and the side of the smallest input it takes.

    Not calibrated on data: a deep random network whose BNs renormalise every layer is chaotic
    (fp32 rounding alone moves its logits by ~1e-4), which would hide what folding changes."""
    torch.manual_seed(seed)
    if get_model_spec(name).builder.__name__ == "InceptionResNetV2":
        model = _short_inception_resnet(name, overrides)
    else:
        model = senet.create_model(name, **overrides)
    side = max(32, getattr(model, "min_input_size", 32))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.8, 1.2)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval(), side
