"""``senet predict --checkpoint PATH IMAGE...``: the top-5 classes of each image."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .common import add_checkpoint_argument


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify images with a trained checkpoint (top-5 with probabilities)",
                       description="Decode each image (Pillow), resize it to the network's input, normalise "
                                   "with the training data's mean/std and print the top-5 classes.")
    add_checkpoint_argument(p)
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top", type=int, default=5, help="how many classes to print (default 5)")
    p.set_defaults(func=run)


def load_image(path: str | Path, input_size: tuple[int, int, int]) -> torch.Tensor:
    """An image file as a float (C, H, W) tensor in [0, 1] at the network's input size.

    Small inputs (CIFAR-size) are resized whole; ImageNet-size inputs follow the paper's
    evaluation view (§5.1): shorter side to size/0.875, centred crop.
    """
    from PIL import Image, UnidentifiedImageError

    c, h, w = input_size
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img = img.convert("L" if c == 1 else "RGB")
            if min(h, w) >= 128:
                scale = round(min(h, w) / 0.875) / min(img.size)
                img = img.resize((max(w, round(img.width * scale)), max(h, round(img.height * scale))),
                                 Image.Resampling.BILINEAR)
                left, top = (img.width - w) // 2, (img.height - h) // 2
                img = img.crop((left, top, left + w, top + h))
            else:
                img = img.resize((w, h), Image.Resampling.BILINEAR)
            data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    except UnidentifiedImageError:
        raise ValueError(f"{path} is not an image Pillow can decode") from None
    return data.view(h, w, c).permute(2, 0, 1).float() / 255


def run(args: argparse.Namespace) -> int:
    from ..train import load_model

    model, meta = load_model(args.checkpoint)
    size = tuple(meta["input_size"])
    mean = torch.tensor(meta["mean"]).view(-1, 1, 1)
    std = torch.tensor(meta["std"]).view(-1, 1, 1)
    x = torch.stack([(load_image(p, size) - mean) / std for p in args.images])
    with torch.no_grad():
        probs = model(x).softmax(dim=1)
    k = min(args.top, probs.shape[1])
    top = probs.topk(k, dim=1)
    for path, values, indices in zip(args.images, top.values, top.indices):
        print(f"{path}:")
        for p, i in zip(values.tolist(), indices.tolist()):
            print(f"  {100 * p:6.2f}%  {meta['classes'][i]}")
    return 0
