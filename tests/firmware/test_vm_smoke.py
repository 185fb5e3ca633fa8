# Portable smoke test: runs in CPython (pytest) and unchanged inside the MicroPython VM
# (tests/vm/test_firmware_in_vm.py). It proves the path the real firmware tests take:
# firmware/ importable, const/array/int behaviour, traces/ readable at the same relative path.
import array
import sys

import core
from micropython import const

_SAT = const(8388607)


def _repo_path(rel):
    # The repository root: two levels above this file in CPython (…/tests/firmware/x.py)
    # and in the VM (/tests/firmware/x.py, so "/tests/firmware/../../" is "/").
    here = __file__.replace("\\", "/")
    base = here.rsplit("/", 1)[0] if "/" in here else "."
    return base + "/../../" + rel


def test_firmware_package_imports():
    assert core.__name__ == "core"


def test_const_is_plain_int():
    assert _SAT == 0x7FFFFF
    assert _SAT + 1 == 1 << 23
    assert -_SAT - 1 == -8388608


def test_int_arithmetic_matches_cpython():
    # Small-int overflow into big ints must be exact in both runtimes.
    big = (1 << 30) * (1 << 30)
    assert big == 1152921504606846976
    assert (-7) // 2 == -4
    assert (-7) % 2 == 1
    assert int("-8388608") == -8388608
    # 24-bit two's complement as an HX711 driver does it.
    raw = 0xFFFFFF
    assert (raw ^ 0x800000) - 0x800000 == -1


def test_array_of_signed_ints():
    buf = array.array("i", [0] * 8)
    buf[0] = -8388608
    buf[7] = 8388607
    assert buf[0] + buf[7] == -1
    assert len(buf) == 8
    assert sum(buf) == -1


def test_traces_readable_relative_to_repo():
    with open(_repo_path("traces/FORMAT.md")) as f:
        first = f.readline()
    assert first.startswith("# shelf-trace/1")


def test_runtime_is_known():
    assert sys.implementation.name in ("cpython", "micropython")
