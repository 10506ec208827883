"""Published weights by name: fetching them and loading them into a network.

Each registered model with published weights carries one or more :class:`PretrainedConfig`
(the first is its default; the record and the shared ImageNet constants live in the leaf module
:mod:`senet.published` and are re-exported here). Weights come from one of two places:

* the Hugging Face hub (``hub_id``, timm's repositories, e.g. ``timm/seresnet50.a1_in1k``),
  read through ``huggingface_hub`` when it is installed (``pip install 'senet[hub]'``); its
  cache is used offline (``HF_HUB_OFFLINE=1``, ``HF_HUB_CACHE`` / ``HF_HOME``);
* a URL (``url``, the authors' Caffe models as ported by Cadene), downloaded once into
  ``$TORCH_HOME/hub/checkpoints`` (torch.hub's folder, so a file fetched by timm or
  ``pretrainedmodels`` is reused) and, as torch.hub does, checked against the SHA-256 prefix
  its name carries (``se_resnet50-ce0d4300.pth``) when it is downloaded.

A file placed by hand in that folder under :meth:`PretrainedConfig.cache_name` is used
first, with or without ``huggingface_hub``. With no network and no cache, the error names
the file to download and where to put it.
"""

from __future__ import annotations

import os
import re
import socket
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import MissingPathError, UserTypeError
from ..published import (IMAGENET_MEAN, IMAGENET_STD, INCEPTION_MEAN, INCEPTION_STD, LABEL_SETS, PretrainedConfig,
                         class_names, imagenet_classes)
from .convert import WeightLoadError, convert_state_dict, load_weights, read_state_dict
from .identify import Candidates, describe_weights, file_metadata

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = ["PretrainedConfig", "PretrainedWeightsError", "IMAGENET_MEAN", "IMAGENET_STD", "INCEPTION_MEAN",
           "INCEPTION_STD", "weights_dir", "resolve_weights", "load_pretrained", "imagenet_classes",
           "class_names", "LABEL_SETS"]

_HASH = re.compile(r"-([a-f0-9]{6,})\.")


class PretrainedWeightsError(MissingPathError):
    """Published weights that cannot be found, fetched or trusted; the message says what to do."""


def weights_dir() -> Path:
    """Where URL weights are cached: torch.hub's ``checkpoints`` folder (``$TORCH_HOME/hub``)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "SENET_OFFLINE"))


def _hub_cache() -> str | None:
    # Read at call time: huggingface_hub reads its environment once, at import.
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def _missing(name: str, cfg: PretrainedConfig, why: str) -> PretrainedWeightsError:
    target = weights_dir() / cfg.cache_name()
    return PretrainedWeightsError(
        f"no weights for {name} ({cfg.location}): {why}. Download {cfg.download_url()} and save it as "
        f"{target} (or pass pretrained='<path to the file>')"
    )


def _from_url(name: str, cfg: PretrainedConfig, target: Path) -> Path:
    import torch.hub

    if _offline():
        raise _missing(name, cfg, "not cached, and offline mode is on (HF_HUB_OFFLINE/SENET_OFFLINE)")
    match = _HASH.search(target.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:  # writes to a temporary file, checks the hash prefix, then renames
        torch.hub.download_url_to_file(cfg.url, str(target), hash_prefix=match.group(1) if match else None,
                                       progress=False)
    except RuntimeError as e:  # torch.hub's hash mismatch
        raise PretrainedWeightsError(f"downloaded {cfg.url} does not match the hash in its name: {e}") from None
    except OSError as e:
        raise _missing(name, cfg, f"download failed ({e})") from None
    return target


def _from_hub(name: str, cfg: PretrainedConfig) -> Path:
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError
    except ImportError:
        raise _missing(name, cfg, "huggingface_hub is not installed (pip install 'senet[hub]')") from None
    offline = _offline()
    if not offline:
        # huggingface_hub retries an unreachable host with back-off (ten "Retrying in Ns" lines,
        # over a minute); one connection attempt tells the same at once.
        unreachable = _hub_unreachable()
        if unreachable:
            raise _missing(name, cfg, f"the hub could not be reached ({unreachable})")
    last: Exception | None = None
    for filename in cfg.hub_files:  # timm publishes safetensors and, for older tools, a torch file
        try:
            return Path(hf_hub_download(cfg.hub_id, filename, cache_dir=_hub_cache(), local_files_only=offline))
        except EntryNotFoundError as e:  # the repository has no such file: try the next form
            last = e
        except Exception as e:  # offline and not cached, no network, unknown repository...
            last = e
            if not offline:
                break
    where = _hub_cache() or "the default Hugging Face cache"
    why = (f"not in the Hugging Face cache ({where}) and offline mode is on" if offline
           else f"the hub could not be reached ({type(last).__name__})")
    raise _missing(name, cfg, why)


def _hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the Hugging Face endpoint cannot be reached (one TCP connection attempt), or None.
    Behind a proxy the direct connection says nothing, so it is not tried."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                                       "all_proxy")):
        return None
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    url = urlsplit(endpoint)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    if not host:
        return f"HF_ENDPOINT {endpoint!r} names no host"
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        return f"{host}:{port}: {e.strerror or type(e).__name__}"
    return None


def resolve_weights(name: str, cfg: PretrainedConfig) -> Path:
    """The local file holding ``cfg``'s weights: the hand-placed/cached file, else the hub or URL."""
    target = weights_dir() / cfg.cache_name()
    if target.is_file():
        return target
    return _from_url(name, cfg, target) if cfg.url else _from_hub(name, cfg)


def load_pretrained(model: nn.Module, name: str, cfg: PretrainedConfig | None, pretrained: Any,
                    source: str, candidates: Candidates | None = None) -> None:
    """Load ``pretrained`` (``True``: ``cfg``'s published weights; a path: that file) into ``model``.

    When the model's classifier has another number of classes than the weights, everything but
    the classifier is loaded, and a warning says so (fine-tuning, paper §6.3 style transfer).
    A file that does not fit fails in one line naming the network it holds, found among
    ``candidates()`` (the registry's entries).
    """
    if pretrained is True:
        path = resolve_weights(name, cfg)
    elif isinstance(pretrained, (str, os.PathLike)):
        path = Path(pretrained)
        if not path.is_file():
            raise MissingPathError(f"pretrained weights file not found: {path}")
    else:
        raise UserTypeError(f"pretrained must be True, False or a path to a weights file, got {pretrained!r}")
    raw = read_state_dict(path)
    drop = cfg.drop_keys if cfg else ()
    sd = convert_state_dict({k: v for k, v in raw.items() if not k.startswith(drop)}, source)
    head = getattr(model, "classifier_name", "fc") + "."
    own = model.state_dict()
    clash = [k for k in sd if k.startswith(head) and k in own and sd[k].shape != own[k].shape]
    own_head = [k for k in own if k.startswith(head)]
    if clash:
        # Keep the model's own (fresh) classifier; every other key must still fit exactly.
        sd = {**{k: v for k, v in sd.items() if not k.startswith(head)}, **{k: own[k] for k in own_head}}
    try:
        load_weights(model, sd, source="senet")
    except WeightLoadError as e:
        held = describe_weights(raw, file_metadata(path), candidates)
        raise WeightLoadError(f"{path.name} holds {held}; the model is {name}, so nothing was loaded "
                              f"({e.report.summary() if e.report else e})", e.report) from None
    if clash:  # said only once the rest has loaded
        warnings.warn(f"{name}: loaded the pretrained weights from {path.name} except the classifier "
                      f"({', '.join(own_head)}), whose number of classes differs; it keeps its fresh "
                      f"initialisation", stacklevel=3)
