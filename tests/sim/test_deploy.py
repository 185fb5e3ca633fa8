"""`shelfctl deploy` against a virtual board: only what changed travels, stale .py files go,
and a swap cut by a power loss is finished at the next boot."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from host_tools.board import files
from host_tools.board.transport import SerialTransport
from host_tools.deploy import deploy_firmware
from host_tools.firmware import FIRMWARE_DIR
from host_tools.vm import node_available

pytestmark = pytest.mark.skipif(not node_available(), reason="Node.js / the VM not installed")


def test_deploy_sends_only_what_changed_and_removes_shadowing_py(board, tmp_path):
    cmd = [sys.executable, "-m", "host_tools.cli", "deploy", "--port", board.port,
           "--board", "virtual"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("sent 31 of 31 files")  # 30 firmware files + board.json
    flash = tmp_path / "board"
    assert (flash / "apps" / "device.mpy").exists() and (flash / "boot.py").exists()
    assert json.loads((flash / "board.json").read_text())["name"] == "virtual"
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.stdout.startswith("sent 0 of 31 files"), again.stdout
    with SerialTransport(board.port) as t:  # an old .py left behind, a damaged .mpy
        files.put(t, b"raise RuntimeError('stale')\n", "/apps/sampler.py")
        files.put(t, b"M\x06garbage", "/core/detector.mpy")
    dry = subprocess.run(cmd + ["--dry-run"], capture_output=True, text=True, timeout=120)
    assert dry.stdout.startswith("would send 1 of 31 files"), dry.stdout
    fix = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert fix.stdout.startswith("sent 1 of 31 files") and "removed 1 stale .py" in fix.stdout
    assert not (flash / "apps" / "sampler.py").exists()
    with SerialTransport(board.port) as t:
        assert t.eval("__import__('apps.sampler').sampler.FAULT_MS") == 400


def test_a_swap_cut_after_its_journal_is_finished_at_boot(board, tmp_path):
    with SerialTransport(board.port, timeout=30) as t:
        deploy_firmware(t)
    flash = tmp_path / "board"
    board.power_off()
    # as a deploy leaves the flash when the power goes right after writing its journal
    (flash / ".deploy-new" / "apps").mkdir(parents=True)
    (flash / ".deploy-new" / "apps" / "version.py").write_text('VERSION = "9.9.9"\n')
    (flash / ".deploy-journal").write_text(json.dumps(
        {"files": ["/apps/version.py"], "remove": ["/apps/version.mpy"]}))
    board.hard_reset()
    with SerialTransport(board.port, timeout=30) as t:
        assert t.eval("__import__('apps.version').version.VERSION") == "9.9.9"
    assert not (flash / ".deploy-journal").exists() and not (flash / ".deploy-new").exists()


def test_a_missing_port_is_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "host_tools.cli", "deploy", "--port",
                        str(tmp_path / "nope")], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "no such port" in p.stderr


def test_a_transfer_cut_midway_leaves_the_old_firmware_whole(board, tmp_path):
    with SerialTransport(board.port, timeout=30) as t:
        deploy_firmware(t)
    flash = tmp_path / "board"
    before = {p: p.read_bytes() for p in flash.rglob("*.mpy")}
    src = tmp_path / "fw"
    shutil.copytree(FIRMWARE_DIR, src)
    for name in ("core/detector.py", "net/mqtt.py", "apps/config.py"):  # big, so several chunks
        with open(src / name, "a") as f:
            f.write("\nCHANGED = 1\n")

    def cut(text):
        if text.startswith("  ") and "/" in text:
            raise KeyboardInterrupt  # the technician's Ctrl-C after the first chunk

    with SerialTransport(board.port, timeout=30) as t, pytest.raises(KeyboardInterrupt):
        deploy_firmware(t, src, force=True, log=cut)
    assert {p: p.read_bytes() for p in flash.rglob("*.mpy")} == before
    assert not (flash / ".deploy-journal").exists()
    board.hard_reset()
    with SerialTransport(board.port, timeout=30) as t:
        assert t.eval("hasattr(__import__('core.detector').detector, 'CHANGED')") is False
        report = deploy_firmware(t, src)
        assert report.sent == 3
        assert t.eval("__import__('core.detector').detector.CHANGED") == 1


def test_frozen_deploy_sends_only_the_top_files_and_removes_shadowing_packages(board, tmp_path):
    flash = tmp_path / "board"
    with SerialTransport(board.port, timeout=30) as t:
        deploy_firmware(t)
    assert (flash / "core" / "detector.mpy").exists()
    cmd = [sys.executable, "-m", "host_tools.cli", "deploy", "--port", board.port, "--no-reset"]
    p = subprocess.run(cmd + ["--frozen"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("sent 0 of 2 files")  # boot.py and main.py were there already
    assert "removed /apps, /core, /drivers, /net" in p.stdout
    assert not any((flash / name).exists() for name in ("apps", "core", "drivers", "net"))
    assert (flash / "boot.py").exists() and (flash / "main.py").exists()
    again = subprocess.run(cmd + ["--frozen"], capture_output=True, text=True, timeout=120)
    assert again.stdout.startswith("sent 0 of 2 files") and "removed" not in again.stdout
    back = subprocess.run(cmd, capture_output=True, text=True, timeout=120)  # as files again
    assert back.stdout.startswith("sent 28 of 30 files"), back.stdout
