"""An exponential moving average of the weights, with torch's own ``AveragedModel``.

``ema = decay * ema + (1 - decay) * weights`` after every optimiser step (Polyak & Juditsky 1992;
timm's ``ModelEmaV3``), of the buffers too (``use_buffers=True``: the BN statistics are averaged
like the weights, as ModelEmaV3 does, so the averaged network is evaluated with its own averaged
statistics; integer buffers such as ``num_batches_tracked`` are unused by evaluation). The first
update copies the weights. ``fit`` evaluates the average beside the raw weights each epoch and keeps
its state in the checkpoint, so a resumed run continues the same average.
"""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["build_ema"]


def build_ema(model: nn.Module, decay: float) -> AveragedModel | None:
    """An EMA of ``model`` (on its device) with ``decay``; None when ``decay`` is 0 (off)."""
    if decay <= 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
