"""File operations on a board, built on the transport's exec(): what deploy and provision use.

Files travel to the board as raw bytes literals (host_tools/board/literal.py), one raw-paste
round trip per chunk, and come back base64-encoded; a SHA-256 computed on the board checks what
arrived.
"""

from __future__ import annotations

import base64
import hashlib
import posixpath

from host_tools.board import literal
from host_tools.board.transport import BoardExecError, SerialTransport

CHUNK = 4096  # bytes of file per round trip (a bytes object of that size on the board)


def makedirs(t: SerialTransport, path: str) -> None:
    """mkdir -p on the board."""
    parts = [p for p in path.strip("/").split("/") if p]
    for i in range(1, len(parts) + 1):
        d = "/" + "/".join(parts[:i])
        t.exec(f"import os\ntry:\n    os.mkdir({d!r})\nexcept OSError as e:\n"
               f"    if e.args[0] != 17:\n        raise\n")


def put(t: SerialTransport, data: bytes, remote: str) -> None:
    """Write `data` to `remote` on the board (parent directories made), then verify it."""
    parent = posixpath.dirname(remote)
    if parent and parent != "/":
        makedirs(t, parent)
    tmp = remote + ".part"
    t.exec(f"_f = open({tmp!r}, 'wb')")
    try:
        for i in range(0, len(data), CHUNK):
            t.exec(b"_f.write(" + literal.literal(data[i:i + CHUNK]) + b")")
    finally:
        t.exec("_f.close()\ndel _f")
    got = sha256(t, tmp)
    if got != hashlib.sha256(data).hexdigest():
        raise BoardExecError(f"{remote}: SHA-256 on the board does not match what was sent")
    t.exec(f"import os\ntry:\n    os.remove({remote!r})\nexcept OSError:\n    pass\n"
           f"os.rename({tmp!r}, {remote!r})")


def get(t: SerialTransport, remote: str) -> bytes:
    out = t.exec(f"import binascii\nwith open({remote!r}, 'rb') as _f:\n"
                 f"    while True:\n        _b = _f.read({CHUNK})\n        if not _b:\n"
                 f"            break\n        print(binascii.b2a_base64(_b).decode().strip())\n")
    return b"".join(base64.b64decode(line) for line in out.split())


#: Board-side code: _sha256(path) -> hex digest, read in 1 KB pieces (the heap stays small).
SHA256_FN = """
import hashlib, binascii
def _sha256(p):
    h = hashlib.sha256()
    with open(p, 'rb') as f:
        while True:
            b = f.read(1024)
            if not b:
                break
            h.update(b)
    return binascii.hexlify(h.digest()).decode()
"""


def sha256(t: SerialTransport, remote: str) -> str:
    return t.exec(SHA256_FN + f"print(_sha256({remote!r}))").strip()


def listdir(t: SerialTransport, path: str = "/") -> list[tuple[str, bool, int]]:
    """(name, is_dir, size) of the entries in `path`."""
    entries = t.eval(f"[(e[0], e[1] == 0x4000, e[3] if len(e) > 3 else 0) "
                     f"for e in __import__('os').ilistdir({path!r})]")
    assert isinstance(entries, list)
    return sorted((str(n), bool(d), int(s)) for n, d, s in entries)


def remove(t: SerialTransport, path: str) -> None:
    """Remove a file or a directory tree."""
    t.exec(f"""import os
def _rm(p):
    try:
        names = [e[0] for e in os.ilistdir(p)]
    except OSError:
        os.remove(p)
        return
    for n in names:
        _rm(p.rstrip('/') + '/' + n)
    os.rmdir(p)
_rm({path!r})
del _rm""")
