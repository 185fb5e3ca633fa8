"""Every portable firmware test (tests/firmware/test_*.py), run inside the MicroPython VM.

One pytest test per (file, function), id `vm::<file>::<function>`. Each file runs once per
session in its own VM (see conftest.py); a test passes when its function returned in the VM,
is skipped only when it raised a `SkipTest` there, and fails with the VM's traceback otherwise.
"""

from __future__ import annotations

import pytest

from host_tools.vm.fwtests import PortableTest, discover

CASES = discover()


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_in_vm(case: PortableTest, vm_firmware_runs) -> None:
    outcome = vm_firmware_runs.report(case).outcome(case.name)
    where = f"{case.path.name}:{case.lineno} {case.name}"
    if outcome.status == "skip":
        pytest.skip(f"skipped in the MicroPython VM: {outcome.detail or '(no reason given)'}")
    if outcome.status != "pass":
        printed = f"\n--- printed in the VM ---\n{outcome.output}" if outcome.output else ""
        pytest.fail(f"{where} failed in the MicroPython VM:\n{outcome.detail}{printed}",
                    pytrace=False)


def test_portable_tests_exist() -> None:
    # An empty collection would make test_in_vm vanish silently.
    assert CASES, "no top-level test_* functions found in tests/firmware/test_*.py"
