"""Where the firmware lives, and how CPython imports it unchanged.

The firmware is written for MicroPython. `use_firmware()` makes CPython look enough like it
for the firmware to import unchanged: a `micropython` module (for `const`), MicroPython's
wrapping tick functions on `time` (`ticks_ms`, `ticks_us`, `ticks_diff`, `ticks_add`,
`sleep_ms`, `sleep_us`), `asyncio.sleep_ms` / `wait_for_ms` and `sys.print_exception`, then
the firmware directory on `sys.path`, so `import core.detector` works on the host exactly as
on the board. Only names CPython lacks are
added; nothing existing is replaced.
"""

from __future__ import annotations

import asyncio
import sys
import time
import traceback
import types
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIRMWARE_DIR = REPO / "firmware"
#: The fake board (machine, network, HX711 chips, a loopback broker): what the firmware finds
#: instead of an ESP32 in tests, benchmarks and the virtual board.
HW_DIR = Path(__file__).resolve().parent / "sim" / "hw"


def _micropython_shim() -> types.ModuleType:
    mod = types.ModuleType("micropython")
    mod.const = lambda x: x  # type: ignore[attr-defined]
    mod.native = lambda f: f  # type: ignore[attr-defined]
    mod.viper = lambda f: f  # type: ignore[attr-defined]
    mod.alloc_emergency_exception_buf = lambda n: None  # type: ignore[attr-defined]
    return mod


_TICKS_PERIOD = 1 << 30  # MicroPython's ticks wrap at 2**30 on every port


def _ticks_diff(a: int, b: int) -> int:
    return ((a - b + _TICKS_PERIOD // 2) % _TICKS_PERIOD) - _TICKS_PERIOD // 2


def _micropython_time_and_asyncio() -> None:
    extra = {
        "ticks_ms": lambda: int(time.monotonic() * 1000) % _TICKS_PERIOD,
        "ticks_us": lambda: int(time.monotonic() * 1_000_000) % _TICKS_PERIOD,
        "ticks_diff": _ticks_diff,
        "ticks_add": lambda t, d: (t + d) % _TICKS_PERIOD,
        "sleep_ms": lambda ms: time.sleep(ms / 1000),
        "sleep_us": lambda us: time.sleep(us / 1_000_000),
    }
    for name, fn in extra.items():
        if not hasattr(time, name):
            setattr(time, name, fn)
    if not hasattr(asyncio, "sleep_ms"):
        asyncio.sleep_ms = lambda ms: asyncio.sleep(ms / 1000)  # type: ignore[attr-defined]
    if not hasattr(asyncio, "wait_for_ms"):
        asyncio.wait_for_ms = (  # type: ignore[attr-defined]
            lambda aw, ms: asyncio.wait_for(aw, ms / 1000))
    if not hasattr(sys, "print_exception"):
        sys.print_exception = (  # type: ignore[attr-defined]
            lambda exc, file=None: traceback.print_exception(exc, file=file or sys.stdout))


def use_firmware(*extra: Path) -> Path:
    """Make the firmware (and any `extra` directories) importable in this CPython process."""
    if "micropython" not in sys.modules:
        sys.modules["micropython"] = _micropython_shim()
    _micropython_time_and_asyncio()
    for path in (FIRMWARE_DIR, *extra):
        p = str(path)
        if p not in sys.path:
            sys.path.insert(0, p)
    return FIRMWARE_DIR
