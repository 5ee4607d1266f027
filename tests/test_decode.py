"""decode.py: every kind of picture becomes correct RGB uint8, and bad files fail clearly."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from cvtool.io.decode import DecodeError, decode_image


def _check_rgb(arr: np.ndarray, h: int, w: int) -> None:
    assert arr.dtype == np.uint8 and arr.shape == (h, w, 3) and arr.flags["C_CONTIGUOUS"]


def test_rgb_jpeg_matches_pillow(samples):
    d = decode_image(str(samples / "cat.jpg"))
    ref = np.asarray(Image.open(samples / "cat.jpg").convert("RGB"))
    _check_rgb(d.rgb, 300, 451)
    assert d.orig_size == (451, 300) and d.format == "JPEG"
    assert np.array_equal(d.rgb, ref)


def test_grayscale_png(tmp_path):
    g = np.tile(np.arange(64, dtype=np.uint8) * 4, (10, 1))
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    d = decode_image(str(tmp_path / "g.png"))
    _check_rgb(d.rgb, 10, 64)
    assert all(np.array_equal(d.rgb[:, :, c], g) for c in range(3))


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
    import cv2

    g16 = np.tile(np.linspace(0, 65535, 50).astype(np.uint16), (5, 1))
    cv2.imwrite(str(tmp_path / "g16.png"), g16)
    d = decode_image(str(tmp_path / "g16.png"))
    _check_rgb(d.rgb, 5, 50)
    assert d.rgb[0, 0, 0] == 0 and d.rgb[0, -1, 0] == 255
    assert abs(int(d.rgb[0, 25, 0]) - int(g16[0, 25]) // 256) <= 1  # mid-grey stays mid-grey


def test_16bit_rgb_png(tmp_path):
    import cv2

    bgr16 = np.zeros((4, 4, 3), np.uint16)
    bgr16[..., 2] = 65535  # red in OpenCV's BGR order
    bgr16[..., 1] = 32768
    cv2.imwrite(str(tmp_path / "c16.png"), bgr16)
    d = decode_image(str(tmp_path / "c16.png"))
    _check_rgb(d.rgb, 4, 4)
    r, g, b = (int(v) for v in d.rgb[0, 0])
    assert r >= 254 and 126 <= g <= 129 and b == 0


def test_rgba_composited_over_white(tmp_path):
    a = np.zeros((2, 2, 4), np.uint8)
    a[0, 0] = (255, 0, 0, 255)  # opaque red
    a[0, 1] = (0, 0, 0, 0)  # fully transparent black
    a[1, 0] = (0, 0, 255, 128)  # half-transparent blue
    Image.fromarray(a, "RGBA").save(tmp_path / "a.png")
    rgb = decode_image(str(tmp_path / "a.png")).rgb
    assert tuple(rgb[0, 0]) == (255, 0, 0)
    assert tuple(rgb[0, 1]) == (255, 255, 255)
    assert 120 <= rgb[1, 0, 0] <= 135 and rgb[1, 0, 2] == 255


def test_la_and_palette_with_transparency(tmp_path):
    la = Image.fromarray(np.array([[[0, 0], [200, 255]]], np.uint8), "LA")
    la.save(tmp_path / "la.png")
    assert decode_image(str(tmp_path / "la.png")).rgb.tolist() == [[[255, 255, 255], [200, 200, 200]]]
    p = Image.new("P", (2, 1))
    p.putpalette([0, 255, 0, 10, 20, 30] + [0] * 762)
    p.putpixel((0, 0), 0)
    p.putpixel((1, 0), 1)
    p.info["transparency"] = 1
    p.save(tmp_path / "p.png", transparency=1)
    assert decode_image(str(tmp_path / "p.png")).rgb.tolist() == [[[0, 255, 0], [255, 255, 255]]]


def test_cmyk_jpeg(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:, :8] = (220, 30, 30)
    rgb[:, 8:] = (30, 30, 220)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    d = decode_image(str(tmp_path / "cmyk.jpg"))
    assert d.mode == "CMYK"
    left, right = d.rgb[8, 2].astype(int), d.rgb[8, 13].astype(int)
    assert left[0] > 180 and left[2] < 80 and right[2] > 180 and right[0] < 80


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_exif_orientation_all_eight(tmp_path, ext):
    base = (np.random.default_rng(0).random((30, 50, 3)) * 255).astype(np.uint8)
    base[:10, :20] = 255
    for o in range(1, 9):
        im = Image.fromarray(base)
        exif = im.getexif()
        exif[0x0112] = o
        path = tmp_path / f"o{o}.{ext}"
        im.save(path, exif=exif, **({"quality": 100} if ext == "jpg" else {}))
        ref = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
        d = decode_image(str(path))
        assert np.array_equal(d.rgb, ref), f"orientation {o}"
        assert d.orig_size == (ref.shape[1], ref.shape[0])


def test_large_jpeg_draft_decodes_smaller_but_enough(tmp_path):
    big = Image.open(os.path.join(os.path.dirname(__file__), "..", "sample_images", "china.jpg"))
    big.resize((2560, 1708)).save(tmp_path / "big.jpg", quality=90)
    d = decode_image(str(tmp_path / "big.jpg"), draft=lambda w, h: (600, 400))
    assert d.orig_size == (2560, 1708)
    assert d.rgb.shape[:2] == (427, 640)  # 1/4 is the smallest DCT scale that still covers 600x400


def test_models_get_the_full_decode():
    """Reduced-size decoding moved busy photos outside the reference tolerance (see
    cvtool.models.preprocess.DRAFT_FACTOR), so no registered preprocessing asks for it."""
    from cvtool.models.registry import list_models

    for spec in list_models():
        if spec.weights.preprocess is not None:
            assert spec.weights.preprocess.draft_size(4032, 3024) == (4032, 3024), spec.name


def _png_claiming(path, width: int, height: int) -> None:
    """A tiny valid PNG whose header claims ``width``×``height`` (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_pixel_limit_refuses_bombs_before_allocating(tmp_path):
    _png_claiming(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(DecodeError, match="10,000,000,000 pixels, over the limit"):
        decode_image(str(tmp_path / "bomb.png"))
    Image.new("RGB", (100, 100)).save(tmp_path / "small.png")
    with pytest.raises(DecodeError, match="over the limit of 5,000"):
        decode_image(str(tmp_path / "small.png"), max_pixels=5000)
    assert decode_image(str(tmp_path / "small.png"), max_pixels=10_000).rgb.shape == (100, 100, 3)


def test_bad_files_fail_with_one_line_reasons(tmp_path, samples):
    cases = {}
    cases["missing.jpg"] = ("no such file", None)
    (tmp_path / "empty.jpg").write_bytes(b"")
    cases["empty.jpg"] = ("empty file", None)
    (tmp_path / "text.jpg").write_text("hello, not an image\n")
    cases["text.jpg"] = ("not a recognised image format", None)
    data = (samples / "coffee.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    cases["truncated.jpg"] = ("truncated", None)
    (tmp_path / "folder.jpg").mkdir()
    cases["folder.jpg"] = ("is a directory", None)
    png = (tmp_path / "p.png")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(png)
    (tmp_path / "truncated.png").write_bytes(png.read_bytes()[:40])
    cases["truncated.png"] = ("", None)
    for name, (reason, _) in cases.items():
        with pytest.raises(DecodeError) as err:
            decode_image(str(tmp_path / name))
        msg = str(err.value)
        assert reason in msg and "\n" not in msg, (name, msg)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file(tmp_path, samples):
    p = tmp_path / "locked.jpg"
    p.write_bytes((samples / "cat.jpg").read_bytes())
    p.chmod(0)
    with pytest.raises(DecodeError, match="permission denied"):
        decode_image(str(p))
