"""Run the portable firmware tests (tests/firmware/test_*.py) inside the MicroPython VM.

A portable test file has top-level `def test_*():` functions without arguments that use plain
`assert`. `discover()` finds them with `ast` (nothing is imported in CPython); `run_test_file()`
runs one file in a fresh VM with `vm_testrunner.py` and returns one outcome per function.

The VM's filesystem mirrors the repository where the tests need it, with `/` standing for the
repository root (the VM's working directory is `/`, as on a board):

    firmware/               -> /            (/core, /drivers: importable as on the board)
    tests/firmware/support/ -> /lib         (test helpers; on sys.path)
    host_tools/sim/hw/      -> /hw          (the fake board: machine, network, HX711; on sys.path)
    tests/firmware/         -> /tests/firmware   (the test modules; appended to sys.path)
    traces/                 -> /traces

so `open("traces/examples/example-00/samples.csv")` opens the same file in the VM as in
CPython run from the repository root, and a path built from a test module's `__file__`
(`/tests/firmware/test_x.py` in the VM) works too.
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from host_tools.firmware import HW_DIR, REPO
from host_tools.vm import DEFAULT_HEAP_KB, VMTimeout, run_micropython

TESTS_DIR = REPO / "tests" / "firmware"
SUPPORT_DIR = TESTS_DIR / "support"
TRACES_DIR = REPO / "traces"
RUNNER = Path(__file__).with_name("vm_testrunner.py")
MARK = "@@vmtest "
#: Seconds one test file may run in the VM (env SHELF_VM_TEST_TIMEOUT overrides).
DEFAULT_FILE_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class PortableTest:
    path: Path
    name: str
    lineno: int

    @property
    def id(self) -> str:
        return f"vm::{self.path.name}::{self.name}"


@dataclass
class Outcome:
    status: str  # "pass", "fail" or "skip"
    detail: str = ""  # traceback (fail) or reason (skip)
    output: str = ""  # what the test printed in the VM
    ms: int | None = None
    alloc: int | None = None


@dataclass
class FileReport:
    path: Path
    returncode: int | None
    stdout: str
    stderr: str
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    import_error: str | None = None
    timed_out: bool = False

    def outcome(self, name: str) -> Outcome:
        """The outcome of test `name`; a failure explaining why when the VM gave none."""
        if name in self.outcomes:
            return self.outcomes[name]
        if self.import_error is not None:
            return Outcome("fail", f"importing {self.path.name} in the VM failed:\n"
                                   f"{self.import_error}")
        if self.timed_out:
            why = "the VM timed out before this test finished"
        else:
            why = f"the VM exited with status {self.returncode} before this test finished"
        return Outcome("fail", f"{why}\n--- VM stderr ---\n{self.stderr.strip()}")


def portable_functions(path: Path) -> list[tuple[str, int]]:
    """Top-level `test_*` functions of a test file, in source order, with line numbers."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        (node.name, node.lineno)
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    ]


def discover(test_dir: Path = TESTS_DIR) -> list[PortableTest]:
    """Every (file, function) pair of `test_dir/test_*.py`, sorted by file name."""
    found: list[PortableTest] = []
    for path in sorted(test_dir.glob("test_*.py")):
        found.extend(PortableTest(path, name, line) for name, line in portable_functions(path))
    return found


def vm_path_of(host_dir: Path) -> str:
    """Where a host directory sits in the VM: its path below the repo root, else /_tests."""
    try:
        rel = host_dir.resolve().relative_to(REPO)
    except ValueError:
        return "/_tests"
    return "/" + rel.as_posix()


def vm_mounts(test_dir: Path = TESTS_DIR) -> dict[str, Path]:
    """VM path -> host path for a test run (the firmware itself is mounted at / first)."""
    mounts = {"/lib": SUPPORT_DIR, "/hw": HW_DIR, "/tests/firmware": TESTS_DIR,
              "/traces": TRACES_DIR}
    mounts[vm_path_of(test_dir)] = test_dir
    return {vm: host for vm, host in mounts.items() if host.exists()}


def file_timeout() -> float:
    return float(os.environ.get("SHELF_VM_TEST_TIMEOUT", DEFAULT_FILE_TIMEOUT_S))


def run_test_file(
    path: Path,
    names: Iterable[str] | None = None,
    *,
    heap_kb: int = DEFAULT_HEAP_KB,
    timeout_s: float | None = None,
) -> FileReport:
    """Run the test functions `names` (default: all) of one file in a fresh VM."""
    path = path.resolve()
    tests = list(names) if names is not None else [n for n, _ in portable_functions(path)]
    module_dir = vm_path_of(path.parent)
    cfg = {"path": [module_dir, "/hw"], "modules": [{"module": path.stem, "tests": tests}]}
    timeout = file_timeout() if timeout_s is None else timeout_s
    try:
        res = run_micropython(
            RUNNER.read_text(encoding="utf-8"), mounts=vm_mounts(path.parent),
            heap_kb=heap_kb, timeout_s=timeout, argv=[json.dumps(cfg)], name="vm_testrunner.py",
        )
    except VMTimeout as exc:
        report = FileReport(path, None, exc.stdout, exc.stderr, timed_out=True)
    else:
        report = FileReport(path, res.returncode, res.stdout, res.stderr)
    _parse(report)
    return report


def _drop_runner_frames(tb: str) -> str:
    """Remove the runner's own frame from a traceback: only the test's frames matter."""
    frame = f'  File "{RUNNER.name}", '
    return "".join(ln for ln in tb.splitlines(keepends=True) if not ln.startswith(frame))


def _parse(report: FileReport) -> None:
    current: str | None = None
    output: list[str] = []
    for line in report.stdout.splitlines():
        if not line.startswith(MARK):
            output.append(line)
            continue
        try:
            event = json.loads(line[len(MARK):])
        except ValueError:
            output.append(line)
            continue
        kind = event.get("event")
        if kind == "import" and not event.get("ok"):
            report.import_error = event.get("detail", "")
        elif kind == "start":
            current, output = event["test"], []
        elif kind == "result" and event.get("test") == current:
            report.outcomes[current] = Outcome(
                event["status"], _drop_runner_frames(event.get("detail", "")), "\n".join(output),
                event.get("ms"), event.get("alloc"),
            )
            current, output = None, []
