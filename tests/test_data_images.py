"""Every Pillow mode decodes to the hand-computed 8-bit RGB values (senet.data.images)."""

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from senet.data import CorruptImageError, ImageFolderDataset
from senet.data.images import decode_image


def _save(tmp_path, img, name):
    path = tmp_path / name
    img.save(path)
    with Image.open(path) as back:  # the file really holds the mode under test
        assert back.mode == img.mode, (back.mode, img.mode)
    return path


def _pixels(path):
    x = decode_image(path)
    assert x.dtype == torch.uint8 and x.shape[0] == 3
    return x.permute(1, 2, 0).reshape(-1, 3).tolist()


def _grey(*values):
    return [[v, v, v] for v in values]


def test_bilevel(tmp_path):
    img = Image.frombytes("1", (8, 1), bytes([0b01000000]))  # one white pixel, second from the left
    assert _pixels(_save(tmp_path, img, "a.png")) == _grey(0, 255, 0, 0, 0, 0, 0, 0)


def test_grey_8_bit(tmp_path):
    img = Image.frombytes("L", (3, 1), bytes([0, 77, 255]))
    assert _pixels(_save(tmp_path, img, "a.png")) == _grey(0, 77, 255)


def test_rgb_8_bit(tmp_path):
    img = Image.frombytes("RGB", (2, 1), bytes([10, 20, 30, 255, 0, 128]))
    assert _pixels(_save(tmp_path, img, "a.png")) == [[10, 20, 30], [255, 0, 128]]


def test_grey_with_alpha_is_composited_on_white(tmp_path):
    # (L, A): opaque black; fully transparent black -> white; 200 at alpha 128/255:
    # 200 * 128/255 + 255 * 127/255 = 100.39 + 127.00 = 227.39 -> 227.
    img = Image.frombytes("LA", (3, 1), bytes([0, 255, 0, 0, 200, 128]))
    assert _pixels(_save(tmp_path, img, "a.png")) == _grey(0, 255, 227)


def test_rgba_is_composited_on_white(tmp_path):
    # transparent red -> white; opaque blue -> blue; black at alpha 51/255 = 0.2 -> 0.8 * 255 = 204.
    img = Image.frombytes("RGBA", (3, 1), bytes([255, 0, 0, 0, 0, 0, 255, 255, 0, 0, 0, 51]))
    assert _pixels(_save(tmp_path, img, "a.png")) == [[255, 255, 255], [0, 0, 255], [204, 204, 204]]


def test_palette_and_its_transparent_index(tmp_path):
    img = Image.frombytes("P", (3, 1), bytes([0, 1, 2]))
    img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 0] + [0] * (3 * 253))
    assert _pixels(_save(tmp_path, img, "a.png")) == [[255, 0, 0], [0, 255, 0], [0, 0, 0]]
    img.info["transparency"] = 2  # index 2 (black) is transparent: shown on white
    path = tmp_path / "t.png"
    img.save(path, transparency=2)
    assert _pixels(path) == [[255, 0, 0], [0, 255, 0], [255, 255, 255]]


# 16-bit grey: round(v * 255 / 65535): 1000 -> 3.89 -> 4; 32768 -> 127.50 -> 128; 65535 -> 255.
# (convert("RGB") clipped every value >= 256 to white.)
SIXTEEN = [0, 1000, 32768, 65535]
SIXTEEN_8 = [0, 4, 128, 255]


@pytest.mark.parametrize("mode, dtype, suffix", [("I;16", "<u2", "png"), ("I;16", "<u2", "tif"),
                                                 ("I;16B", ">u2", "tif")])
def test_16_bit_grey_is_scaled_not_clipped(tmp_path, mode, dtype, suffix):
    img = Image.frombytes(mode, (4, 1), np.array(SIXTEEN, dtype=dtype).tobytes())
    assert _pixels(_save(tmp_path, img, f"a.{suffix}")) == _grey(*SIXTEEN_8)


def test_32_bit_integer_holds_16_bit_data(tmp_path):
    # Mode I as Pillow gives it for 16-bit PGM/TIFF: the 16-bit scale, values outside clamped.
    img = Image.frombytes("I", (6, 1), np.array(SIXTEEN + [70000, -5], dtype="<i4").tobytes())
    assert _pixels(_save(tmp_path, img, "a.tif")) == _grey(*SIXTEEN_8, 255, 0)


def test_16_bit_pgm_is_scaled(tmp_path):
    path = tmp_path / "a.pgm"
    path.write_bytes(b"P5\n3 1\n65535\n" + np.array([0, 1000, 65535], dtype=">u2").tobytes())
    assert _pixels(path) == _grey(0, 4, 255)


def test_float_is_unit_intensity(tmp_path):
    # 0.25 * 255 = 63.75 -> 64; above 1 and below 0 clamped; NaN read as 0.
    img = Image.frombytes("F", (6, 1), np.array([0.0, 0.25, 1.0, 2.0, -1.0, np.nan], dtype="<f4").tobytes())
    assert _pixels(_save(tmp_path, img, "a.tif")) == _grey(0, 64, 255, 255, 0, 0)


def test_cmyk(tmp_path):
    # R = 255 (1 - C)(1 - K): white, cyan, black, and M = K = 128: R = B = 255 * 127/255 = 127,
    # G = 255 * (127/255)^2 = 63.25 -> 63.
    img = Image.frombytes("CMYK", (4, 1), bytes([0, 0, 0, 0, 255, 0, 0, 0, 0, 0, 0, 255, 0, 128, 0, 128]))
    assert _pixels(_save(tmp_path, img, "a.tif")) == [[255, 255, 255], [0, 255, 255], [0, 0, 0], [127, 63, 127]]


def _png_16_bit_rgb(values: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (colour type 2), written by hand: Pillow cannot write one."""
    h, w, _ = values.shape
    raw = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_16_bit_rgb_is_scaled(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(_png_16_bit_rgb(np.array([[[0, 16384, 65535], [257, 32768, 1000]]])))
    # round(v * 255 / 65535) = 0, 64, 255 / 1, 128, 4; Pillow keeps the high byte (1000 >> 8 = 3): within 1.
    got = torch.tensor(_pixels(path))
    want = torch.tensor([[0, 64, 255], [1, 128, 4]])
    assert (got - want).abs().max() <= 1 and got[0].tolist() == [0, 64, 255]


def test_undecodable_file_is_named(tmp_path):
    path = tmp_path / "bad.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(CorruptImageError, match="bad.png"):
        decode_image(path)


def test_image_folder_of_16_bit_greys_is_not_white(tmp_path):
    # A mid-grey, a near-black and a white 16-bit PNG must differ after decoding.
    for split in ("train", "val"):
        for cls, value in (("a", 32768), ("b", 2000), ("c", 65535)):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.frombytes("I;16", (4, 4), np.full(16, value, dtype="<u2").tobytes()).save(
                tmp_path / split / cls / "x.png")
    data = ImageFolderDataset(tmp_path, "test", image_size=4)
    firsts = [data._load(i)[0][0, 0, 0].item() for i in range(3)]
    assert firsts == [128, 8, 255]  # 2000 * 255 / 65535 = 7.78 -> 8
