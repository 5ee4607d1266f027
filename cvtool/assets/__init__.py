"""Small real photos shipped inside the package, so that checks (export parity, `--validate`)
work wherever cvtool is installed. Downscaled copies of sample_images/ (see its README for
sources and licences: all CC0 or public domain)."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent


def photos() -> list[Path]:
    return sorted(HERE.glob("*.jpg"))
