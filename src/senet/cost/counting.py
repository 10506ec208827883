"""What a network costs: parameters, multiply-adds and SE's share (paper §4, Tables 2-3, 10, 13, 15, 16).

Multiply-adds of convolutions and linear layers come from ``torch.utils.flop_counter`` (which
counts 2 FLOPs per multiply-add). The paper's "GFLOPs" are multiply-adds of the original ResNet
plus SE's element-wise work, the global pooling and the channel scaling, 2 x C x H x W per block
(§4: 3.86 vs 3.87 GFLOPs for ResNet-50 vs SE-ResNet-50); that is :attr:`Complexity.paper_flops`.

Counting runs the model on the ``meta`` device through ``torch.func.functional_call``: no real
arithmetic, no copy of the weights, and the model is left untouched.

FLOPs hide what SE costs on a GPU: its arithmetic is +0.26%, but its element-wise tail reads and
writes whole activations (docs/cost.md). ``complexity(..., traffic=True)`` also counts the bytes
moved (:mod:`senet.cost.traffic`).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from ..errors import UserInputError
from ..layers import fused_se
from ..layers.se import SqueezeExcite
from .traffic import TRAFFIC_KINDS, Traffic, count_traffic

__all__ = ["Complexity", "PartCost", "Traffic", "complexity", "format_complexity", "TRAFFIC_KINDS"]


@dataclasses.dataclass
class PartCost:
    """Cost of one top-level part of a network (a stage, the stem, the classifier)."""

    name: str
    params: int = 0
    se_params: int = 0
    macs: int = 0  # conv/linear multiply-adds, SE FCs included
    se_macs: int = 0  # multiply-adds of the SE FCs
    se_ops: int = 0  # SE pooling + scaling element-wise operations
    se_blocks: int = 0


@dataclasses.dataclass
class Complexity:
    """Totals and per-part costs for one input size (batch of one), and the bytes moved
    (``traffic``, keyed by :data:`TRAFFIC_KINDS`) when counted."""

    input_size: tuple[int, ...]
    parts: list[PartCost]
    traffic: dict[str, Traffic] = dataclasses.field(default_factory=dict)
    traffic_dtype: str | None = None
    traffic_batch: int = 1
    traffic_channels_last: bool = False

    def _sum(self, field: str) -> int:
        return sum(getattr(p, field) for p in self.parts)

    @property
    def params(self) -> int:
        return self._sum("params")

    @property
    def se_params(self) -> int:
        return self._sum("se_params")

    @property
    def macs(self) -> int:
        """Multiply-adds of all convolutions and linear layers."""
        return self._sum("macs")

    @property
    def se_macs(self) -> int:
        return self._sum("se_macs")

    @property
    def se_ops(self) -> int:
        return self._sum("se_ops")

    @property
    def se_blocks(self) -> int:
        return self._sum("se_blocks")

    @property
    def paper_flops(self) -> int:
        """The paper's "FLOPs" convention: conv/linear multiply-adds + SE pooling and scaling (§4)."""
        return self.macs + self.se_ops

    def as_dict(self) -> dict[str, object]:
        return {
            "input_size": list(self.input_size),
            "params": self.params,
            "se_params": self.se_params,
            "macs": self.macs,
            "se_macs": self.se_macs,
            "se_ops": self.se_ops,
            "paper_flops": self.paper_flops,
            "se_blocks": self.se_blocks,
            "parts": [dataclasses.asdict(p) for p in self.parts],
            **({"traffic": {k: {**dataclasses.asdict(t), "total": t.total} for k, t in self.traffic.items()},
                "traffic_dtype": self.traffic_dtype, "traffic_batch": self.traffic_batch,
                "traffic_channels_last": self.traffic_channels_last} if self.traffic else {}),
        }


def _count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def complexity(model: nn.Module, input_size: Sequence[int] = (3, 224, 224), *, traffic: bool = False,
               dtype: torch.dtype = torch.float32, batch: int = 1, channels_last: bool = False) -> Complexity:
    """Count parameters and multiply-adds of ``model`` for one input of shape ``input_size`` (C, H, W).

    Parts are the model's top-level children (for residual nets: the stem layers, ``layer1``..,
    ``fc``), so SE's share can be read per stage as in Table 13. ``traffic=True`` also counts the
    bytes moved (see module doc) with activations and weights in ``dtype`` for a batch of ``batch``,
    in NCHW or ``channels_last`` memory format (which layouts the fused path takes depends on it).
    """
    input_size = tuple(int(s) for s in input_size)
    if len(input_size) != 3 or min(input_size) < 1:
        raise UserInputError(f"input_size must be (channels, height, width), got {input_size}")
    se_modules = {name: m for name, m in model.named_modules() if isinstance(m, SqueezeExcite)}
    parts = {name: PartCost(name) for name, _ in model.named_children()}

    def part_of(qualified: str) -> PartCost:
        return parts[qualified.split(".", 1)[0]]

    for name, child in model.named_children():
        parts[name].params = _count_params(child)
    for name, se in se_modules.items():
        part = part_of(name)
        part.se_params += _count_params(se)
        part.se_blocks += 1

    def se_hook(name: str, se: SqueezeExcite):
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
            n, c, h, w = args[0].shape
            pooling = 0 if isinstance(se.squeeze, nn.Identity) else c * h * w
            part_of(name).se_ops += n * (pooling + c * h * w)  # pool + per-channel scaling

        return hook

    handles = [se.register_forward_hook(se_hook(name, se)) for name, se in se_modules.items()]
    tensors = {
        k: torch.empty(v.shape, dtype=v.dtype, device="meta")
        for k, v in [*model.named_parameters(), *model.named_buffers()]
    }
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with counter:
            functional_call(model, tensors, (torch.empty(1, *input_size, device="meta"),))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()

    # FlopCounterMode names modules "<RootClass>.<qualified name>"; keep the qualified part.
    root = type(model).__name__ + "."
    for key, ops in counter.get_flop_counts().items():
        if not key.startswith(root):
            continue
        qualified = key[len(root):]
        flops = sum(ops.values())
        if "." not in qualified and qualified in parts:
            parts[qualified].macs = flops // 2
        if qualified in se_modules:
            part_of(qualified).se_macs += flops // 2
    unowned = [p for p in parts.values() if not (p.params or p.macs or p.se_ops)]
    cost = Complexity(input_size, [p for p in parts.values() if p not in unowned])
    if traffic:
        if not isinstance(batch, int) or batch < 1:
            raise UserInputError(f"batch must be an integer >= 1, got {batch!r}")
        kinds = [k for k in TRAFFIC_KINDS if fused_se.triton_available() or k.endswith("eager")]
        cost.traffic = {kind: count_traffic(model, input_size, train=kind.startswith("train"),
                                            fused=kind.endswith("fused"), dtype=dtype, batch=batch,
                                            channels_last=channels_last)
                        for kind in kinds}
        cost.traffic_dtype, cost.traffic_batch = str(dtype).replace("torch.", ""), batch
        cost.traffic_channels_last = channels_last
    return cost


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.4g}{unit}"
    return f"{n:.0f}"


def _ops(n: int) -> str:
    return f"{n / 1e9:.4f} G" if n >= 1e8 else f"{n / 1e6:.3f} M"


def format_complexity(costs: dict[str, Complexity], parts: bool = True) -> str:
    """A plain-text table of one or more models' costs side by side (``senet summary``)."""
    names = list(costs)
    rows: list[list[str]] = []
    header = ["", *names]

    def add(label: str, values: list[str]) -> None:
        rows.append([label, *values])

    c = [costs[n] for n in names]
    add("parameters", [f"{x.params:,}" for x in c])
    add("  of which SE", [f"{x.se_params:,} ({100 * x.se_params / max(x.params, 1):.2f}%)" for x in c])
    add("SE blocks", [str(x.se_blocks) for x in c])
    add("multiply-adds (conv/linear)", [_ops(x.macs) for x in c])
    add("  of which SE FCs", [_ops(x.se_macs) for x in c])
    add("SE pooling + scaling ops", [_ops(x.se_ops) for x in c])
    add("paper FLOPs (MACs + SE ops)", [_ops(x.paper_flops) for x in c])
    kinds = [k for k in TRAFFIC_KINDS if all(k in x.traffic for x in c)]
    if kinds:
        t0 = c[0]
        add(f"bytes read + written ({t0.traffic_dtype}, batch {t0.traffic_batch}"
            f"{', channels_last' if t0.traffic_channels_last else ''})", [""] * len(c))
        for k in kinds:
            add(f"  {k}", [f"{_si(x.traffic[k].total)}B (R {_si(x.traffic[k].read)}B / W {_si(x.traffic[k].written)}B)"
                           for x in c])
    if parts:
        part_names: list[str] = []
        for x in c:
            part_names += [p.name for p in x.parts if p.name not in part_names]
        add("per part: params / MACs", [""] * len(c))
        for pn in part_names:
            vals = []
            for x in c:
                p = next((q for q in x.parts if q.name == pn), None)
                vals.append("-" if p is None else f"{_si(p.params)} / {_si(p.macs)}"
                            + (f" (SE {_si(p.se_params)})" if p.se_params else ""))
            add(f"  {pn}", vals)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    title = f"input {'x'.join(map(str, c[0].input_size))}, batch 1"
    if len(c) == 2 and c[1].params and c[1].paper_flops:
        a, b = c
        lines.append(
            f"\n{names[0]} vs {names[1]}: {a.params - b.params:+,} parameters "
            f"({100 * (a.params / b.params - 1):+.2f}%), {(a.paper_flops - b.paper_flops) / 1e6:+.3f} MFLOPs "
            f"({100 * (a.paper_flops / b.paper_flops - 1):+.2f}%)"
        )
        if kinds:  # what SE adds, in multiply-adds and in bytes, side by side (docs/cost.md)
            lines.append(f"SE's share: multiply-adds {100 * (1 - b.macs / a.macs):.2f}% | bytes "
                         + " | ".join(f"{k} {100 * (1 - b.traffic[k].total / a.traffic[k].total):.1f}%"
                                      for k in kinds))
    return title + "\n" + "\n".join(lines)
