"""What `cvtool doctor` finds: one :class:`Check` per thing it looked at, gathered in a
:class:`Report`; and :func:`attempt`, which runs one check so that its failure never stops the
others. Standard library only."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

STATUSES = ("ok", "info", "failed", "skipped")


class Problem(Exception):
    """A check found something wrong: ``detail`` says what (one line), ``fix`` what to do."""

    def __init__(self, detail: str, fix: str | None = None, data: dict | None = None):
        super().__init__(detail)
        self.detail, self.fix, self.data = detail, fix, data or {}


@dataclass
class Outcome:
    """What a check that did not fail returns: ``status`` "ok" or "info" (worth knowing, not a
    fault: an optional package that is missing, a GPU provider on a machine without a GPU)."""

    detail: str
    status: str = "ok"
    data: dict = field(default_factory=dict)


@dataclass
class Check:
    """One line of the doctor's report.

    ``ok`` is True for "ok" and "info", False for "failed", None for "skipped" (not run because an
    earlier check it needs failed; that one names the cause). ``fix`` says what to do about a
    failure. ``data`` holds the figures for machines (versions, paths, sizes, providers).
    ``traceback`` is kept for ``--debug`` (not part of :meth:`to_dict`).
    """

    name: str
    group: str
    status: str
    detail: str
    seconds: float = 0.0
    fix: str | None = None
    data: dict = field(default_factory=dict)
    traceback: str | None = None

    @property
    def ok(self) -> bool | None:
        return None if self.status == "skipped" else self.status != "failed"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "group": self.group, "ok": self.ok, "status": self.status,
                "detail": self.detail, "seconds": round(self.seconds, 3), "fix": self.fix, "data": self.data}


@dataclass
class Report:
    """Every check of one doctor run, in the order they ran."""

    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def get(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        from cvtool import __version__

        counts = {s: sum(c.status == s for c in self.checks) for s in STATUSES}
        return {"cvtool": __version__, "ok": self.ok, "counts": counts,
                "failed": [c.name for c in self.failed], "seconds": round(self.seconds, 3),
                "checks": [c.to_dict() for c in self.checks]}


def attempt(name: str, group: str, fn: Callable[[], Outcome]) -> Check:
    """Run one check. A :class:`Problem` is a failure with its own cause and fix; any other
    exception is a failure too, named by its type (it may be a bug in cvtool: the traceback is
    kept for ``--debug``)."""
    t0 = time.perf_counter()
    try:
        out = fn()
    except Problem as p:
        return Check(name, group, "failed", p.detail, time.perf_counter() - t0, p.fix, p.data,
                     traceback.format_exc())
    except Exception as e:  # noqa: BLE001 - one check's failure must not stop the others
        return Check(name, group, "failed", f"{type(e).__name__}: {first_line(e)}", time.perf_counter() - t0,
                     fix_for_exception(e), traceback=traceback.format_exc())
    return Check(name, group, out.status, out.detail, time.perf_counter() - t0, None, out.data)


def skipped(name: str, group: str, why: str) -> Check:
    return Check(name, group, "skipped", f"not checked: {why}")


def first_line(e: BaseException, limit: int = 300) -> str:
    return ((str(e).strip().splitlines() or [type(e).__name__])[0])[:limit]


def fix_for_exception(e: BaseException) -> str:
    """What to do about an exception no check expected."""
    if isinstance(e, ModuleNotFoundError) and e.name:
        from cvtool.doctor.packages import distribution_for_module

        dist = distribution_for_module(e.name)
        return f"pip install {dist}" if dist else f"install the package that provides the module {e.name!r}"
    return ("rerun with `cvtool --debug doctor` (or CVTOOL_DEBUG=1) for the traceback; if it points into "
            "cvtool, report it as a bug")
