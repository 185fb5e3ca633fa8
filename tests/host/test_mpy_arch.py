"""The board definition's chip picks mpy-cross's -march (it matters to native code only)."""

from __future__ import annotations

import json

import pytest

from host_tools.deploy import arch_of, board_definition
from host_tools.errors import UserError
from host_tools.mpy import MpyCrossError, compile_tree

NATIVE = "import micropython\n@micropython.native\ndef f(x):\n    return x + 1\n"


def test_each_board_definition_names_its_arch():
    assert arch_of(board_definition("esp32-devkitc-v4")) == "xtensawin"
    assert arch_of(board_definition("esp32-s3-devkitc-1")) == "xtensawin"
    assert arch_of(board_definition("virtual")) is None  # the VM: portable bytecode
    assert arch_of(json.dumps({"chip": "esp32c3"}).encode()) == "rv32imc"
    assert arch_of(b"not json") is None and arch_of(None) is None


def test_unknown_board_definition_is_one_line():
    with pytest.raises(UserError, match="no board definition 'nope'"):
        board_definition("nope")


def test_arch_reaches_mpy_cross_and_the_cache_keeps_archs_apart(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "fast.py").write_text(NATIVE)
    cache = tmp_path / "cache"
    with pytest.raises(MpyCrossError, match="invalid arch"):
        compile_tree(tmp_path / "none", src, cache_dir=cache)  # native code needs an arch
    compile_tree(tmp_path / "xt", src, cache_dir=cache, arch="xtensawin")
    compile_tree(tmp_path / "rv", src, cache_dir=cache, arch="rv32imc")
    xt = (tmp_path / "xt" / "fast.mpy").read_bytes()
    rv = (tmp_path / "rv" / "fast.mpy").read_bytes()
    assert xt[:2] == rv[:2] == b"M\x06" and xt[2] != rv[2]  # the header's arch differs
    compile_tree(tmp_path / "xt2", src, cache_dir=cache, arch="xtensawin")  # from the cache
    assert (tmp_path / "xt2" / "fast.mpy").read_bytes() == xt
