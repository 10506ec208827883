"""Decoding one image file to the 8-bit RGB tensor that the §5.1 normalisation expects.

Pillow opens files in many modes; ``Image.convert("RGB")`` is right for 8-bit ones but clips
high-bit-depth values (a 16-bit grey of 1000 becomes 255, not 4) and drops alpha, keeping
whatever colour the transparent pixels happen to hold. :func:`decode_image` instead maps every
mode to intensities in [0, 1] first, then to 0..255:

======================  ==========================================================================
mode                    how it is read
======================  ==========================================================================
``1``, ``L``, ``RGB``   as is (``1``: black 0, white 255)
``I;16``, ``I;16B`` ... 16-bit unsigned: ``round(v * 255 / 65535)``
``I``                   32-bit integer holding 16-bit data (what Pillow gives for 16-bit PGM and
                        TIFF): ``round(v * 255 / 65535)``, values outside 0..65535 clamped
``F``                   floating point intensity in [0, 1] (the float-image convention):
                        ``round(v * 255)``, outside clamped, NaN as 0
``CMYK``                ``255 * (1 - C) * (1 - K)`` for R (M, Y for G, B), the textbook formula
``LA``, ``RGBA``, ``P``  alpha-composited on a **white** background (``BACKGROUND``), the way a
with transparency, ...  viewer shows a transparent image: ``out = a * colour + (1 - a) * 255``
other modes             Pillow's conversion to RGB (``YCbCr``, ``LAB``, ``HSV``...)
======================  ==========================================================================

16-bit RGB(A) PNGs are opened by Pillow as ``RGB``/``RGBA`` holding the high byte of each value
(``v >> 8``, within 1 of the scaled value): there is no 48-bit mode to read them at full depth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import BadFileError

__all__ = ["decode_image", "CorruptImageError", "BACKGROUND"]

#: The colour transparent pixels are composited on (white, as an image viewer shows them).
BACKGROUND = 255.0


class CorruptImageError(BadFileError):
    """An image file that Pillow cannot decode; the message names the file."""


def decode_image(path: str | Path) -> torch.Tensor:
    """Decode ``path`` to a ``uint8`` (3, H, W) RGB tensor, high-bit-depth modes scaled and
    alpha composited on white (module docstring); any failure raises :class:`CorruptImageError`
    naming the file."""
    from PIL import Image  # Pillow is needed only to read image files

    try:
        with Image.open(path) as img:
            img.load()  # the full decode, so a truncated file fails here
            rgb = _to_rgb8(img)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise CorruptImageError(f"cannot decode image {path}: {type(e).__name__}: {e}") from None
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


def _to_rgb8(img: "Image.Image") -> np.ndarray:  # noqa: F821 - PIL is imported lazily
    """``img`` as a uint8 (H, W, 3) array (module docstring)."""
    mode = img.mode
    if mode in ("LA", "La", "PA", "RGBA", "RGBa") or (mode in ("1", "L", "P", "RGB") and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        alpha = rgba[..., 3:4]
        return _quantise(alpha * rgba[..., :3] + (1.0 - alpha) * (BACKGROUND / 255.0))
    if mode.startswith("I;16"):
        return _grey(_quantise(np.asarray(img).astype(np.float32) / 65535.0))
    if mode == "I":
        return _grey(_quantise(np.clip(np.asarray(img), 0, 65535).astype(np.float32) / 65535.0))
    if mode == "F":
        return _grey(_quantise(np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0)))
    if mode == "CMYK":
        cmyk = np.asarray(img, dtype=np.float32) / 255.0
        return _quantise((1.0 - cmyk[..., :3]) * (1.0 - cmyk[..., 3:4]))
    if mode in ("1", "L"):
        return _grey(np.asarray(img.convert("L")))
    return np.asarray(img.convert("RGB"))  # RGB as is; YCbCr, LAB, HSV... by Pillow's conversion


def _quantise(unit: np.ndarray) -> np.ndarray:
    """Intensities in [0, 1] (clamped) to 0..255, rounded to nearest."""
    return np.rint(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)


def _grey(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[..., None], 3, axis=-1)
