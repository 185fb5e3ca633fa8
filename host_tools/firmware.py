"""Where the firmware lives, and how CPython imports it unchanged.

The firmware is written for MicroPython; the only module it uses that CPython lacks is
`micropython` (for `const`). `use_firmware()` puts a stand-in into `sys.modules` and the
firmware directory on `sys.path`, so `import core.detector` works on the host exactly as on
the board.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIRMWARE_DIR = REPO / "firmware"


def _micropython_shim() -> types.ModuleType:
    mod = types.ModuleType("micropython")
    mod.const = lambda x: x  # type: ignore[attr-defined]
    mod.native = lambda f: f  # type: ignore[attr-defined]
    mod.viper = lambda f: f  # type: ignore[attr-defined]
    mod.alloc_emergency_exception_buf = lambda n: None  # type: ignore[attr-defined]
    return mod


def use_firmware(*extra: Path) -> Path:
    """Make the firmware (and any `extra` directories) importable in this CPython process."""
    if "micropython" not in sys.modules:
        sys.modules["micropython"] = _micropython_shim()
    for path in (FIRMWARE_DIR, *extra):
        p = str(path)
        if p not in sys.path:
            sys.path.insert(0, p)
    return FIRMWARE_DIR
