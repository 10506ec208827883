"""Inference folding: BatchNorm folded into the convolution before it, dropout removed.

In eval mode a BatchNorm is a fixed per-channel affine map, ``y = (x - mean) / sqrt(var + eps)
* gamma + beta``; when its input is the output of a convolution and nothing else reads that
output, the map can be merged into the convolution's weights and bias (``W' = W * s``,
``b' = (b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``), so the network does one
pass over the feature map instead of two. The SE blocks (paper §3) are untouched: their FCs are
not followed by BN.

Which BN follows which conv is found from the model's own computation, not from module names:
one forward pass with autograd recording, then a BN is folded into a conv only if the BN's
input edge in the autograd graph is the conv's output node *and* that node has no other
consumer. This covers every family of the package (``Sequential(conv, bn)``, ``ConvBnAct``,
``bn1(conv1(x))`` inside a block) and correctly leaves alone a BN that is not directly after a
conv (pre-activation units, DenseNet's BN-ReLU-conv), a conv whose output is also used
elsewhere (a pre-activation stem feeding both the first unit's BN and its shortcut), and a
conv output modified in place before the BN. ``torch.fx`` would see the same structure but
cannot trace the input checks (Python branches on shapes) that the models run.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Iterable

import torch
from torch import nn

from ..errors import UserInputError, UserTypeError
from ..models.common import BatchNormReLU

__all__ = ["fold_for_inference", "find_conv_bn_pairs", "FoldReport"]

# What a folded BN becomes: its affine part now lives in the conv; any activation it carried stays.
_AFTER_FOLD: dict[type, type] = {nn.BatchNorm2d: nn.Identity, nn.SyncBatchNorm: nn.Identity, BatchNormReLU: nn.ReLU}
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


@dataclasses.dataclass
class FoldReport:
    """What :func:`fold_for_inference` did, by qualified module name."""

    folded: list[tuple[str, str]]  # (conv, bn) pairs merged
    kept_bn: list[str]  # BatchNorms not directly after a conv (pre-activation, BN-ReLU-conv)
    dropped: list[str]  # dropout modules replaced by nn.Identity


def _flatten(out: object) -> Iterable[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        yield out
    elif isinstance(out, (list, tuple)):
        for o in out:
            yield from _flatten(o)
    elif isinstance(out, dict):
        for o in out.values():
            yield from _flatten(o)


def _example_input(model: nn.Module) -> torch.Tensor:
    # Structure does not depend on the image size here; the smallest size the model accepts is cheapest.
    side = max(32, int(getattr(model, "min_input_size", 32)))
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    return torch.randn(1, int(getattr(model, "in_chans", 3)), side, side, device=device, dtype=dtype)


def find_conv_bn_pairs(model: nn.Module, example_input: torch.Tensor | None = None) -> list[tuple[str, str]]:
    """``(conv_name, bn_name)`` for every ``nn.Conv2d`` whose output goes to one BatchNorm and nowhere else.

    Runs ``model`` once in eval mode on ``example_input`` (default: one random image of the
    model's smallest accepted size) with autograd recording; see the module docstring.
    """
    x = _example_input(model) if example_input is None else example_input
    was_training = model.training
    model.eval()
    names = {id(m): n for n, m in model.named_modules()}
    calls: dict[str, int] = {}
    conv_out: dict[object, str] = {}  # autograd node that produced a conv's output -> conv name
    bn_in: dict[str, object] = {}  # BN name -> autograd node that produced its input
    handles = []

    def count(module: nn.Module) -> str:
        name = names[id(module)]
        calls[name] = calls.get(name, 0) + 1
        return name

    def conv_hook(module: nn.Module, _args: tuple, out: object) -> None:
        name = count(module)
        if isinstance(out, torch.Tensor) and out.grad_fn is not None:
            conv_out[out.grad_fn] = name

    def bn_hook(module: nn.Module, args: tuple) -> None:
        name = count(module)
        if args and isinstance(args[0], torch.Tensor) and args[0].grad_fn is not None:
            bn_in[name] = args[0].grad_fn

    for m in model.modules():
        if type(m) is nn.Conv2d:  # a subclass may compute something else in forward
            handles.append(m.register_forward_hook(conv_hook))
        elif type(m) in _AFTER_FOLD:
            handles.append(m.register_forward_pre_hook(bn_hook))
    try:
        # The pairs are read off the autograd graph, so record one even inside inference_mode
        # (where enable_grad alone records nothing and every pair would be missed silently).
        with torch.inference_mode(False), torch.enable_grad():
            outputs = list(_flatten(model(x.detach().clone().requires_grad_(True))))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    # Count the consumers of every node of the autograd graph. The BN reads its input, so a conv
    # output node with a single consumer whose value is that BN's input feeds the BN and nothing else.
    uses: dict[object, int] = {}
    seen: set[int] = set()
    stack = [o.grad_fn for o in outputs if o.grad_fn is not None]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for parent, _ in node.next_functions:
            if parent is not None:
                uses[parent] = uses.get(parent, 0) + 1
                stack.append(parent)

    pairs = []
    for bn, node in bn_in.items():
        conv = conv_out.get(node)
        # A module called twice (weight sharing) cannot be folded for one of its calls only.
        if conv is not None and uses.get(node, 0) == 1 and calls[conv] == 1 and calls[bn] == 1:
            pairs.append((conv, bn))
    return sorted(pairs)


@torch.no_grad()
def _fold_into(conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm) -> None:
    # In float64, so the folded weights round once, not at every step.
    var, mean = bn.running_var.double(), bn.running_mean.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(mean)
    weight = conv.weight.double() * scale.view(-1, *([1] * (conv.weight.ndim - 1)))
    conv.weight.copy_(weight.to(conv.weight.dtype))
    new_bias = ((bias - mean) * scale + beta).to(conv.weight.dtype)
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias)
    else:
        conv.bias.copy_(new_bias)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def fold_for_inference(model: nn.Module, *, example_input: torch.Tensor | None = None, inplace: bool = False,
                       check: bool = True) -> nn.Module:
    """A copy of ``model`` for inference: each BatchNorm directly after a conv folded into it and
    replaced by ``nn.Identity`` (or ``nn.ReLU`` for a BN-ReLU module), dropout replaced by
    ``nn.Identity``, in eval mode. Outputs equal the eval-mode model's up to float rounding.

    The folded model has conv biases and no folded BN buffers, so its ``state_dict`` no longer
    matches the training layout: fold after loading weights, not before. ``example_input`` is the
    input used to find the pairs (see :func:`find_conv_bn_pairs`) and, with ``check=True``, to
    verify the folded model against the original (a ``RuntimeError`` if they differ by more than
    float rounding). ``inplace=True`` folds ``model`` itself instead of a copy.

    The pairs folded, the BNs kept and the dropouts removed are in ``model.fold_report``.
    """
    if not isinstance(model, nn.Module):
        raise UserTypeError(f"fold_for_inference expects an nn.Module, got {type(model).__name__}")
    if inplace and any(p.is_inference() for p in model.parameters()):
        raise UserInputError("fold_for_inference(inplace=True) cannot fold a model whose parameters were created "
                             "inside torch.inference_mode(); create it outside, or fold a copy (inplace=False)")
    with torch.inference_mode(False):  # a copy made in inference_mode would hold inference tensors
        folded = model if inplace else copy.deepcopy(model)
    folded.eval()
    x = _example_input(folded) if example_input is None else example_input
    reference = None
    if check:
        with torch.no_grad():
            reference = [t.clone() for t in _flatten(folded(x))]
    pairs = find_conv_bn_pairs(folded, x)
    report = FoldReport([], [], [])
    for conv_name, bn_name in pairs:
        bn = folded.get_submodule(bn_name)
        if bn.running_mean is None:  # no running statistics: BN normalises with batch statistics
            continue
        _fold_into(folded.get_submodule(conv_name), bn)
        _replace(folded, bn_name, _AFTER_FOLD[type(bn)]())
        report.folded.append((conv_name, bn_name))
    report.kept_bn = [n for n, m in folded.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    report.dropped = [n for n, m in folded.named_modules() if isinstance(m, _DROPOUTS)]
    for name in report.dropped:
        _replace(folded, name, nn.Identity())
    folded.eval()
    folded.fold_report = report
    if reference is not None:
        with torch.no_grad():
            got = list(_flatten(folded(x)))
        for ref, out in zip(reference, got):
            # BN folding reorders a multiply and an add per element: allow rounding, relative to the scale.
            tol = 1e-4 * (1.0 + ref.abs().max().item())
            diff = (ref - out).abs().max().item()
            if not diff <= tol:
                raise RuntimeError(f"folding changed the output of {type(model).__name__} by {diff:.3g} "
                                   f"(> {tol:.3g}); please report this model")
    return folded
