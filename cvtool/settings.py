"""Settings read from the environment, validated as the matching options are (standard library
only: checked by the CLI's top-level callback before any command runs)."""

from __future__ import annotations

import os

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's decompression-bomb warning threshold


class SettingError(ValueError):
    """An environment setting has a value cvtool cannot use; ``str(err)`` is one line."""


def debugging() -> bool:
    """``cvtool --debug …`` or ``CVTOOL_DEBUG=1``: show tracebacks."""
    return os.environ.get("CVTOOL_DEBUG", "").lower() in ("1", "true", "yes")


def max_pixels_from_env() -> int:
    """``CVTOOL_MAX_PIXELS`` (a whole number ≥ 1, as ``--max-pixels``; ``1e8`` is accepted) or the
    default. An unusable value is an error, never silently ignored."""
    env = os.environ.get("CVTOOL_MAX_PIXELS", "").strip()
    if not env:
        return DEFAULT_MAX_PIXELS
    try:
        value = float(env)
    except ValueError:
        value = None
    if value is None or value != value or value < 1 or value != int(value):
        raise SettingError(f"CVTOOL_MAX_PIXELS={env!r}: expected a whole number of pixels, at least 1 "
                           "(as --max-pixels)")
    return int(value)


def check_environment() -> None:
    """Raise :class:`SettingError` for the first unusable setting."""
    max_pixels_from_env()
