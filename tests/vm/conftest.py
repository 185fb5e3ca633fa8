"""Fixtures for running code in the MicroPython VM.

`vm_firmware_runs`: the portable firmware test files, each run once per session in its own
VM. On first use it starts, in parallel, a VM for every file the session's selected items
need; each test then waits for its own file.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from host_tools.vm import VMUnavailable, check_available
from host_tools.vm.fwtests import FileReport, PortableTest, run_test_file


@pytest.fixture(scope="session")
def vm_ready() -> None:
    """Fail (not skip) with a one-line reason when the VM cannot run here."""
    try:
        check_available()
    except VMUnavailable as exc:
        pytest.fail(f"MicroPython VM unavailable: {exc}", pytrace=False)


class FirmwareVMRuns:
    def __init__(self, session: pytest.Session) -> None:
        self._session = session
        self._pool: ThreadPoolExecutor | None = None
        self._futures: dict[Path, Future[FileReport]] = {}

    def _wanted(self) -> dict[Path, list[str]]:
        wanted: dict[Path, list[str]] = {}
        for item in self._session.items:
            callspec = getattr(item, "callspec", None)
            case = callspec.params.get("case") if callspec is not None else None
            if isinstance(case, PortableTest):
                wanted.setdefault(case.path, []).append(case.name)
        return wanted

    def _start(self, case: PortableTest) -> None:
        wanted = self._wanted()
        wanted.setdefault(case.path, []).append(case.name)
        workers = max(1, min(len(wanted), os.cpu_count() or 2))
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vm")
        for path, names in wanted.items():
            # Run the whole file's selection in one VM, in source order, duplicates removed.
            self._futures[path] = self._pool.submit(run_test_file, path, dict.fromkeys(names))

    def report(self, case: PortableTest) -> FileReport:
        if self._pool is None:
            self._start(case)
        if case.path not in self._futures:
            assert self._pool is not None
            self._futures[case.path] = self._pool.submit(run_test_file, case.path)
        return self._futures[case.path].result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="session")
def vm_firmware_runs(request: pytest.FixtureRequest, vm_ready: None):
    runs = FirmwareVMRuns(request.session)
    yield runs
    runs.close()
