"""host_tools.mpy: compiled files are reused by content, and a changed source is compiled."""

from __future__ import annotations

from pathlib import Path

from host_tools.mpy import compile_tree


def test_compile_cache_reuses_by_content(tmp_path: Path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "a.py").write_text("X = 1\n")
    (src / "main.py").write_text("print('main')\n")
    cache = tmp_path / "cache"
    first = compile_tree(tmp_path / "o1", src, cache)
    assert sorted(p.as_posix() for p in first) == ["main.py", "pkg/a.mpy"]
    assert len(list(cache.glob("*.mpy"))) == 1  # main.py stays source, never cached
    (tmp_path / "o1" / "pkg" / "a.mpy").write_bytes(b"")  # outputs are copies, not links
    compile_tree(tmp_path / "o2", src, cache)
    assert (tmp_path / "o2" / "pkg" / "a.mpy").read_bytes()[:2] == b"M\x06"
    assert len(list(cache.glob("*.mpy"))) == 1  # nothing new compiled
    (src / "pkg" / "a.py").write_text("X = 2\n")
    compile_tree(tmp_path / "o3", src, cache)
    assert len(list(cache.glob("*.mpy"))) == 2
    assert (tmp_path / "o3" / "pkg" / "a.mpy").read_bytes() != \
        (tmp_path / "o2" / "pkg" / "a.mpy").read_bytes()
