"""firmware/manifest.py, the freeze manifest: it freezes every firmware package, and it stays a
build-time file (not compiled or deployed as firmware, not type-checked as firmware).

MicroPython's manifest tool runs a manifest as Python with `include`, `package`, `module` and
`options` defined; here a recording stand-in for those runs it in CPython.
"""

from __future__ import annotations

import json
from pathlib import Path

from host_tools.firmware import FIRMWARE_DIR, REPO
from host_tools.mpy import KEEP_SOURCE, compile_tree

MANIFEST = FIRMWARE_DIR / "manifest.py"


class _Options:
    """The manifest's `options`: keyword arguments of the include() that ran it, else its
    defaults(), else None."""

    def __init__(self, **given: object) -> None:
        self._given = given
        self._defaults: dict[str, object] = {}

    def defaults(self, **defaults: object) -> None:
        self._defaults = defaults

    def __getattr__(self, name: str) -> object:
        return self._given.get(name, self._defaults.get(name))


def read_manifest(**options: object) -> dict[str, list[str]]:
    """What the manifest asks for: the first argument of each include/package/module call."""
    calls: dict[str, list[str]] = {"include": [], "package": [], "module": []}

    def recorder(kind: str):
        return lambda path, *args, **kwargs: calls[kind].append(path)

    api: dict[str, object] = {kind: recorder(kind) for kind in calls}
    api["options"] = _Options(**options)
    exec(compile(MANIFEST.read_text(), str(MANIFEST), "exec"), api)
    return calls


def firmware_top_level() -> set[str]:
    """What the firmware imports by top-level name: packages, and modules but the files
    MicroPython runs by name (boot.py, main.py) and the manifest itself."""
    packages = {p.name for p in FIRMWARE_DIR.iterdir() if (p / "__init__.py").is_file()}
    modules = {p.stem for p in FIRMWARE_DIR.glob("*.py")
               if p.name not in KEEP_SOURCE and p != MANIFEST}
    return packages | modules


def test_manifest_freezes_every_firmware_package() -> None:
    calls = read_manifest()
    frozen = set(calls["package"]) | {Path(m).stem for m in calls["module"]}
    assert frozen == firmware_top_level()
    # package() paths are relative to the manifest's directory
    for name in calls["package"]:
        assert (FIRMWARE_DIR / name / "__init__.py").is_file(), name


def test_manifest_keeps_the_ports_own_frozen_modules_unless_told_not_to() -> None:
    # FROZEN_MANIFEST replaces the port's manifest, where asyncio is frozen on the ESP32
    assert read_manifest()["include"] == ["$(PORT_DIR)/boards/manifest.py"]
    assert read_manifest(port_manifest=False)["include"] == []


def test_compile_tree_leaves_the_manifest_out(tmp_path: Path) -> None:
    written = {p.as_posix() for p in compile_tree(tmp_path)}
    assert not {w for w in written if w.startswith("manifest.")}
    assert not (tmp_path / "manifest.mpy").exists()
    assert {"boot.py", "main.py", "apps/device.mpy"} <= written


def test_pyright_does_not_check_the_manifest_as_firmware() -> None:
    config = json.loads((REPO / "pyrightconfig.json").read_text())
    assert "firmware" in config["include"]
    assert "firmware/manifest.py" in config["exclude"]
