"""`shelfctl deploy` (and the virtual store's provisioning): the firmware onto a board over
its serial port, quickly and never half-way.

1. compile firmware/ with mpy-cross 1.29 (boot.py and main.py stay source);
2. ask the board for the SHA-256 of what it has: only changed files travel (--force: all);
3. pack the changed files into one zlib stream (the board inflates it with `deflate`),
   base64 it and upload it in raw-paste chunks; unpack into a staging directory on the board;
4. write a journal and swap the staged files in (firmware/apps/swap.py, whose source is sent
   along: a cut after the journal is finished by boot.py at the next start), removing `.py`
   files that would shadow their new `.mpy`;
5. verify every deployed file's hash on the board; soft reset unless told not to.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from host_tools.board import files
from host_tools.board.files import SHA256_FN
from host_tools.board.transport import BoardExecError, SerialTransport, TransportError
from host_tools.errors import UserError
from host_tools.firmware import FIRMWARE_DIR, REPO
from host_tools.mpy import MpyCrossError, compile_tree

SWAP_SOURCE = FIRMWARE_DIR / "apps" / "swap.py"
CHUNK_B64 = 4096  # base64 characters per raw-paste exec
BLOB = "/.deploy-blob"


@dataclass
class DeployReport:
    files: int  # files in the firmware
    sent: int  # files that travelled
    payload_bytes: int  # their size on the board
    wire_bytes: int  # what crossed the serial line for them (compressed, base64)
    seconds: float
    removed: list[str] = field(default_factory=list)

    @property
    def payload_rate(self) -> float:
        return self.payload_bytes / self.seconds if self.seconds > 0 else 0.0


_HASHES = SHA256_FN + """
import os
def _walk(d, out):
    try:
        es = list(os.ilistdir(d))
    except OSError:
        return
    for e in es:
        p = (d.rstrip('/') + '/' + e[0])
        if e[1] == 0x4000:
            if not p.startswith('/.deploy'):
                _walk(p, out)
        else:
            out[p] = _sha256(p)
_out = {}
for _d in DIRS:
    _walk(_d, _out)
for _p in FILES:
    try:
        _out[_p] = _sha256(_p)
    except OSError:
        pass
print(repr(_out))
"""


def board_hashes(t: SerialTransport, dirs: list[str], files: list[str]) -> dict[str, str]:
    code = _HASHES.replace("DIRS", repr(dirs)).replace("FILES", repr(files))
    out = t.exec(code, timeout=60).strip()
    return dict(eval(out, {"__builtins__": {}}))  # a dict literal of str -> str


def pack(files: dict[str, bytes]) -> bytes:
    """name length (2), name, data length (4), data; all zlib-compressed."""
    raw = bytearray()
    for name, data in files.items():
        n = name.encode()
        raw += len(n).to_bytes(2, "big") + n + len(data).to_bytes(4, "big") + data
    return zlib.compress(bytes(raw), 9)


_UNPACK = """
import deflate, os
def _mk(p):
    c = ''
    for part in p.split('/')[:-1]:
        if part:
            c += '/' + part
            try:
                os.mkdir(c)
            except OSError:
                pass
def _rd(d, n):
    b = b''
    while len(b) < n:
        x = d.read(n - len(b))
        if not x:
            raise ValueError('short deploy blob')
        b += x
    return b
with open(BLOB, 'rb') as _f:
    _d = deflate.DeflateIO(_f, deflate.ZLIB)
    while True:
        _l = _d.read(2)
        if not _l:
            break
        _name = _rd(_d, int.from_bytes(_l, 'big')).decode()
        _n = int.from_bytes(_rd(_d, 4), 'big')
        _dst = STAGE + _name
        _mk(_dst)
        with open(_dst, 'wb') as _o:
            while _n:
                _c = _d.read(min(_n, 1024))
                _o.write(_c)
                _n -= len(_c)
os.remove(BLOB)
"""


def deploy_firmware(t: SerialTransport, src: Path = FIRMWARE_DIR, *, force: bool = False,
                    dry_run: bool = False, extra: dict[str, bytes] | None = None,
                    reset: bool = True, log=lambda text: None) -> DeployReport:
    """Deploy `src` (compiled) plus `extra` files (board path -> bytes) to the board."""
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        try:
            written = compile_tree(out, src)
        except MpyCrossError as exc:
            raise UserError(str(exc)) from None
        local = {"/" + rel.as_posix(): (out / rel).read_bytes() for rel in written}
    local.update(extra or {})
    wanted = {p: hashlib.sha256(d).hexdigest() for p, d in local.items()}
    top_dirs = sorted({"/" + p.split("/")[1] for p in local if p.count("/") > 1})
    t.exec("pass")  # into the raw REPL (stops main.py), before timing what is ours
    have = board_hashes(t, top_dirs, [p for p in local if p.count("/") == 1])
    changed = {p: local[p] for p in local if force or have.get(p) != wanted[p]}
    stale = sorted(p for p in have if p.endswith(".py") and p[:-3] + ".mpy" in local
                   and p not in local)
    report = DeployReport(len(local), len(changed), sum(map(len, changed.values())), 0, 0.0,
                          stale)
    if dry_run or (not changed and not stale):
        report.seconds = round(time.monotonic() - start, 3)
        return report
    swap = SWAP_SOURCE.read_text()
    if changed:
        blob = base64.b64encode(pack(changed)).decode()
        report.wire_bytes = len(blob)
        t.exec(f"_bf = open({BLOB!r}, 'wb')\nimport binascii")
        for i in range(0, len(blob), CHUNK_B64):
            t.exec(f"_bf.write(binascii.a2b_base64({blob[i:i + CHUNK_B64].encode()!r}))")
            log(f"  {min(i + CHUNK_B64, len(blob))}/{len(blob)} bytes")
        t.exec("_bf.close()\ndel _bf")
        t.exec(swap + "\n_rmtree(STAGE)\n" + _UNPACK.replace("BLOB", repr(BLOB)),
               timeout=120)
    t.exec(swap + f"\nwrite_journal({sorted(changed)!r}, {stale!r})\nprint(finish())",
           timeout=60)
    after = board_hashes(t, top_dirs, [p for p in local if p.count("/") == 1])
    bad = [p for p in local if after.get(p) != wanted[p]]
    if bad:
        raise BoardExecError(f"after deploy, {len(bad)} file(s) differ on the board: "
                             f"{', '.join(bad[:3])}")
    if reset:
        t.soft_reset()
    report.seconds = round(time.monotonic() - start, 3)
    return report


def put_json(t: SerialTransport, obj: object, remote: str) -> None:
    files.put(t, json.dumps(obj, indent=1).encode(), remote)


# ---- the verb -------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", required=True, help="serial port (or a virtual board's pty)")
    parser.add_argument("--board", help="also install boards/NAME.json as the board.json")
    parser.add_argument("--force", action="store_true", help="send every file, changed or not")
    parser.add_argument("--dry-run", action="store_true", help="show what would be sent")
    parser.add_argument("--baud", type=int, default=115200)
    parser.add_argument("--no-reset", action="store_true", help="do not soft-reset afterwards")


def run(args: argparse.Namespace) -> int:
    extra = {}
    if args.board:
        path = REPO / "boards" / f"{args.board}.json"
        if not path.exists():
            names = sorted(p.stem for p in (REPO / "boards").glob("*.json"))
            raise UserError(f"no board definition {args.board!r} (have: {', '.join(names)})")
        extra["/board.json"] = path.read_bytes()
    try:
        with SerialTransport(args.port, args.baud) as t:
            r = deploy_firmware(t, force=args.force, dry_run=args.dry_run, extra=extra,
                                reset=not args.no_reset)
    except TransportError as exc:
        raise UserError(f"{args.port}: {exc}") from None
    verb = "would send" if args.dry_run else "sent"
    print(f"{verb} {r.sent} of {r.files} files, {r.payload_bytes} bytes "
          f"({r.wire_bytes} on the wire) in {r.seconds:.2f} s, "
          f"{r.payload_rate / 1024:.1f} KB/s payload"
          + (f"; removed {len(r.removed)} stale .py" if r.removed else ""))
    return 0
