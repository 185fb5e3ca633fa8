"""Run Python code in the real MicroPython 1.29 VM (the pinned WebAssembly port, under Node.js).

The Node side is `mpvm.mjs` next to this file: one Node process per run, a fresh VM, an
in-memory filesystem built from host directories and files. By default the firmware directory
is copied to the VM's root, as it sits on a board's flash (`/core/...`, `/drivers/...`), the
working directory is `/` and `sys.path` is the board's `['', '.frozen', '/lib']`.

    >>> run_micropython("import core; print(1 + 1)").stdout
    '2\\n'

The VM's heap starts at `heap_kb` but grows on demand: it does not enforce a board-sized heap.
See docs/vm.md for what is real in this VM and what is not.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from host_tools.firmware import FIRMWARE_DIR, REPO

__all__ = [
    "DEFAULT_HEAP_KB",
    "FileSource",
    "MPVM_SCRIPT",
    "PACKAGE_DIR",
    "VMError",
    "VMResult",
    "VMTimeout",
    "VMUnavailable",
    "build_spec",
    "check_available",
    "node_available",
    "run_micropython",
    "iter_micropython",
    "vm_command",
]

MPVM_SCRIPT = Path(__file__).with_name("mpvm.mjs")
PACKAGE_DIR = REPO / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"
#: Roughly what an ESP32-WROOM leaves to Python.
DEFAULT_HEAP_KB = 192
DEFAULT_TIMEOUT_S = 120.0

FileSource = bytes | str | Path


class VMUnavailable(RuntimeError):
    """Node.js or the pinned VM package is missing."""


class VMTimeout(RuntimeError):
    """The VM ran longer than its timeout; it has been killed."""

    def __init__(self, timeout_s: float, stdout: str = "", stderr: str = "") -> None:
        super().__init__(f"MicroPython VM timed out after {timeout_s:g} s")
        self.timeout_s = timeout_s
        self.stdout = stdout
        self.stderr = stderr


@dataclass(frozen=True)
class VMResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def check(self) -> VMResult:
        """Return self, or raise VMError when the script did not end normally."""
        if self.returncode != 0:
            raise VMError(self)
        return self


class VMError(RuntimeError):
    """A script run in the VM exited non-zero (raised, or sys.exit(n))."""

    def __init__(self, result: VMResult) -> None:
        tail = result.stderr.strip() or "(no stderr)"
        super().__init__(f"MicroPython exited with {result.returncode}:\n{tail}")
        self.result = result


def _unavailable_reason() -> str | None:
    if shutil.which("node") is None:
        return "node (Node.js) is not on PATH: run make setup"
    if not (PACKAGE_DIR / "micropython.mjs").is_file():
        return f"the MicroPython VM package is missing ({PACKAGE_DIR}): run make setup"
    return None


def node_available() -> bool:
    """True when Node.js and the pinned MicroPython package are installed."""
    return _unavailable_reason() is None


def check_available() -> None:
    """Raise VMUnavailable with a one-line reason when the VM cannot run here."""
    reason = _unavailable_reason()
    if reason is not None:
        raise VMUnavailable(reason)


def vm_command(*args: str) -> list[str]:
    """The command line that runs mpvm.mjs with `args` (after checking it can run)."""
    check_available()
    node = shutil.which("node")
    assert node is not None
    return [node, str(MPVM_SCRIPT), *args]


def _file_entry(vm_path: str, source: FileSource) -> dict[str, str]:
    if not vm_path.startswith("/"):
        raise ValueError(f"VM paths are absolute: {vm_path!r}")
    if isinstance(source, Path):
        return {"vm": vm_path, "host": str(source.resolve())}
    if isinstance(source, str):
        return {"vm": vm_path, "text": source}
    return {"vm": vm_path, "base64": base64.b64encode(source).decode("ascii")}


def build_spec(
    script: str,
    *,
    mounts: Mapping[str, Path] | None = None,
    files: Mapping[str, FileSource] | None = None,
    firmware: bool = True,
    heap_kb: int = DEFAULT_HEAP_KB,
    cwd: str = "/",
    argv: tuple[str, ...] | list[str] = (),
    sys_path: tuple[str, ...] | list[str] = (),
    name: str = "<script>",
    async_: bool = False,
) -> dict:
    """The JSON spec mpvm.mjs reads: see the header of mpvm.mjs."""
    all_mounts: dict[str, Path] = {"/": FIRMWARE_DIR} if firmware else {}
    all_mounts.update(mounts or {})
    for vm_path in all_mounts:
        if not vm_path.startswith("/"):
            raise ValueError(f"VM paths are absolute: {vm_path!r}")
    return {
        "heap": int(heap_kb) * 1024,
        "cwd": cwd,
        "name": name,
        "code": script,
        "argv": [str(a) for a in argv],
        "path": list(sys_path),
        "async": bool(async_),
        "mounts": [{"host": str(Path(h).resolve()), "vm": v} for v, h in all_mounts.items()],
        "files": [_file_entry(v, s) for v, s in (files or {}).items()],
    }


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("MPVM_PACKAGE", str(PACKAGE_DIR))
    return env


def run_micropython(
    script: str,
    *,
    mounts: Mapping[str, Path] | None = None,
    files: Mapping[str, FileSource] | None = None,
    firmware: bool = True,
    heap_kb: int = DEFAULT_HEAP_KB,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
    cwd: str = "/",
    argv: tuple[str, ...] | list[str] = (),
    sys_path: tuple[str, ...] | list[str] = (),
    name: str = "<script>",
    async_: bool = False,
) -> VMResult:
    """Run `script` (MicroPython source) in a fresh VM and return its exit status and output.

    mounts: VM directory -> host directory (or file), copied in; the firmware directory is
        mounted at "/" first unless `firmware=False`.
    files: VM path -> content: bytes, str (text) or a host Path (read by Node, no copy here).
    heap_kb: the VM's initial GC heap. The port grows it on demand, so it is not a limit.
    timeout_s: kill the VM after this long and raise VMTimeout (None: no limit).
    name: the file name tracebacks show for the script; `__name__` is "__main__".
    async_: allow top-level `await` (runs the code with the port's runPythonAsync).
    A Python exception in the script gives returncode 1 and its traceback in stderr.
    """
    spec = build_spec(
        script, mounts=mounts, files=files, firmware=firmware, heap_kb=heap_kb, cwd=cwd,
        argv=argv, sys_path=sys_path, name=name, async_=async_,
    )
    cmd = vm_command("--spec", "-")
    try:
        proc = subprocess.run(
            cmd, input=json.dumps(spec), capture_output=True, text=True, encoding="utf-8",
            errors="replace", timeout=timeout_s, env=_env(),
        )
    except subprocess.TimeoutExpired as exc:
        raise VMTimeout(timeout_s or 0, _text(exc.stdout), _text(exc.stderr)) from None
    return VMResult(proc.returncode, proc.stdout, proc.stderr)


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data


def iter_micropython(
    script: str,
    *,
    mounts: Mapping[str, Path] | None = None,
    files: Mapping[str, FileSource] | None = None,
    firmware: bool = True,
    heap_kb: int = DEFAULT_HEAP_KB,
    timeout_s: float | None = None,
    cwd: str = "/",
    argv: tuple[str, ...] | list[str] = (),
    sys_path: tuple[str, ...] | list[str] = (),
    name: str = "<script>",
    async_: bool = False,
) -> Iterator[str]:
    """Like run_micropython, but yield the script's stdout lines (without "\\n") as they come.

    Raises VMError (with the traceback in .result.stderr) if the script ends non-zero, and
    VMTimeout if it runs longer than timeout_s. Closing the generator early kills the VM.
    """
    spec = build_spec(
        script, mounts=mounts, files=files, firmware=firmware, heap_kb=heap_kb, cwd=cwd,
        argv=argv, sys_path=sys_path, name=name, async_=async_,
    )
    cmd = vm_command("--spec", "-")
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        encoding="utf-8", errors="replace", env=_env(),
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stderr_parts: list[str] = []
    err_pipe = proc.stderr
    reader = threading.Thread(target=lambda: stderr_parts.append(err_pipe.read()), daemon=True)
    reader.start()
    timed_out = threading.Event()

    def kill_on_timeout() -> None:
        timed_out.set()
        proc.kill()

    timer = threading.Timer(timeout_s, kill_on_timeout) if timeout_s else None
    if timer:
        timer.daemon = True
        timer.start()
    finished = False
    try:
        try:
            proc.stdin.write(json.dumps(spec))
            proc.stdin.close()
        except BrokenPipeError:
            pass
        for line in proc.stdout:
            yield line[:-1] if line.endswith("\n") else line
        proc.wait()
        finished = True
    finally:
        if timer:
            timer.cancel()
        if not finished:
            proc.kill()
            proc.wait()
        reader.join(5)
        proc.stdout.close()
        err_pipe.close()
    stderr = "".join(stderr_parts)
    if timed_out.is_set():
        raise VMTimeout(timeout_s or 0, "", stderr)
    if proc.returncode != 0:
        raise VMError(VMResult(proc.returncode, "", stderr))
