"""`shelfctl deploy` (and the virtual store's provisioning): the firmware onto a board over
its serial port, quickly and never half-way.

1. compile firmware/ with mpy-cross 1.29 (boot.py and main.py stay source);
2. ask the board for the SHA-256 of what it has: only changed files travel (--force: all);
3. pack the changed files into one zlib stream (the board inflates it with `deflate`) and
   upload it in raw-paste chunks as raw bytes literals (host_tools/board/literal.py: 4 %
   overhead, where base64 costs 33 %); unpack into a staging directory on the board, each
   staged file checked against its SHA-256;
4. write a journal and swap the staged files in (firmware/apps/swap.py, whose source is sent
   along: a cut after the journal is finished by boot.py at the next start), removing `.py`
   files that would shadow their new `.mpy`;
5. verify every deployed file's hash on the board; soft reset unless told not to.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from host_tools.board import files, literal, ports
from host_tools.board.files import SHA256_FN
from host_tools.board.transport import BoardExecError, SerialTransport, TransportError
from host_tools.errors import UserError
from host_tools.firmware import FIRMWARE_DIR, REPO
from host_tools.mpy import ARCH_BY_CHIP, MpyCrossError, compile_tree

SWAP_SOURCE = FIRMWARE_DIR / "apps" / "swap.py"
CHUNK = 8192  # bytes of the compressed blob per raw-paste exec (a bytes object on the board)
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


# The board's side of the hash compare: one line per file, a 64-bit prefix of its SHA-256 and
# its path (full digests would cost 0.3 s of 115200-baud output for 30 files; staged files are
# checked against their full digests before the swap).
_HASHES = SHA256_FN + """
import os
def _walk(d):
    try:
        es = list(os.ilistdir(d))
    except OSError:
        return
    for e in es:
        p = (d.rstrip('/') + '/' + e[0])
        if e[1] == 0x4000:
            if not p.startswith('/.deploy'):
                _walk(p)
        else:
            print(_sha256(p)[:16], p)
for _d in DIRS:
    _walk(_d)
for _p in FILES:
    try:
        print(_sha256(_p)[:16], _p)
    except OSError:
        pass
"""
PREFIX = 16  # hex digits of SHA-256 compared


def board_hashes(t: SerialTransport, dirs: list[str], files: list[str]) -> dict[str, str]:
    """path -> SHA-256 prefix of every file under `dirs` and of `files`, as the board has them."""
    code = _HASHES.replace("DIRS", repr(dirs)).replace("FILES", repr(files))
    out: dict[str, str] = {}
    for line in t.exec(literal.packed_code(code), timeout=60).splitlines():
        digest, _, path = line.strip().partition(" ")
        if len(digest) == PREFIX and path.startswith("/"):
            out[path] = digest
    return out


def pack(files: dict[str, bytes]) -> bytes:
    """Per file: name length (2), name, SHA-256 (32), data length (4), data; all
    zlib-compressed (window 32 KB: the board's deflate allocates it while unpacking)."""
    raw = bytearray()
    for name, data in files.items():
        n = name.encode()
        raw += (len(n).to_bytes(2, "big") + n + hashlib.sha256(data).digest()
                + len(data).to_bytes(4, "big") + data)
    return zlib.compress(bytes(raw), 9)


# On the board: inflate the blob into STAGE, checking each staged file's SHA-256 as read back
# from flash; a mismatch stops before the journal, so the old firmware stays whole.
_UNPACK = SHA256_FN + """
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
        _want = _rd(_d, 32)
        _n = int.from_bytes(_rd(_d, 4), 'big')
        _dst = STAGE + _name
        _mk(_dst)
        with open(_dst, 'wb') as _o:
            while _n:
                _c = _d.read(min(_n, 2048))
                if not _c:
                    raise ValueError('short deploy blob')
                _o.write(_c)
                _n -= len(_c)
        if _sha256(_dst) != binascii.hexlify(_want).decode():
            raise ValueError('staged file differs after writing: ' + _name)
os.remove(BLOB)
"""


def _swap_source() -> str:
    """firmware/apps/swap.py without its comments and docstrings: it travels every deploy."""
    keep = []
    for line in SWAP_SOURCE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith('"""'):
            continue
        keep.append(line)
    return "\n".join(keep) + "\n"


def deploy_firmware(t: SerialTransport, src: Path = FIRMWARE_DIR, *, force: bool = False,
                    dry_run: bool = False, extra: dict[str, bytes] | None = None,
                    reset: bool = True, log=lambda text: None,
                    arch: str | None = None, frozen: bool = False) -> DeployReport:
    """Deploy `src` (compiled for `arch`, mpy-cross -march) plus `extra` files (board path ->
    bytes) to the board. frozen: the board's image holds the packages (firmware/manifest.py):
    only the top-level files travel, and deployed packages, which would shadow the frozen
    ones ('' comes before '.frozen' on sys.path), are removed."""
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        try:
            written = compile_tree(out, src, arch=arch)
        except MpyCrossError as exc:
            raise UserError(str(exc)) from None
        local = {"/" + rel.as_posix(): (out / rel).read_bytes() for rel in written}
    top_dirs = sorted({"/" + p.split("/")[1] for p in local if p.count("/") > 1})
    if frozen:
        local = {p: d for p, d in local.items() if p.count("/") == 1}
    local.update(extra or {})
    wanted = {p: hashlib.sha256(d).hexdigest()[:PREFIX] for p, d in local.items()}
    top_files = [p for p in local if p.count("/") == 1]
    t.exec("pass")  # into the raw REPL (stops main.py), before timing what is ours
    have = board_hashes(t, top_dirs, top_files)
    changed = {p: local[p] for p in local if force or have.get(p) != wanted[p]}
    stale = sorted(p for p in have if p.endswith(".py") and p[:-3] + ".mpy" in local
                   and p not in local)
    if frozen:  # whole package directories go (an empty one would still shadow)
        stale = [d for d in top_dirs if any(p.startswith(d + "/") for p in have)]
    report = DeployReport(len(local), len(changed), sum(map(len, changed.values())), 0, 0.0,
                          stale)
    if dry_run or (not changed and not stale):
        report.seconds = round(time.monotonic() - start, 3)
        return report
    finish = (f"write_journal({sorted(changed)!r}, {stale!r})\nprint(finish())\n")
    if changed:
        blob = pack(changed)
        sent = 0
        for i in range(0, len(blob), CHUNK):
            head = f"_bf = open({BLOB!r}, 'wb')\n" if i == 0 else ""
            code = head.encode() + b"_bf.write(" + literal.literal(blob[i:i + CHUNK]) + b")"
            t.exec(code, timeout=60)
            sent += len(code)
            log(f"  {min(i + CHUNK, len(blob))}/{len(blob)} bytes")
        report.wire_bytes = sent
        t.exec(literal.packed_code("_bf.close()\ndel _bf\n" + _swap_source()
                                   + "_rmtree(STAGE)\n" + _UNPACK.replace("BLOB", repr(BLOB))
                                   + finish), timeout=120)
    else:
        t.exec(literal.packed_code(_swap_source() + finish), timeout=60)
    after = board_hashes(t, top_dirs, top_files)
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
    parser.add_argument("--port", required=True,
                        help="serial port, USB serial number, or a virtual board's pty")
    parser.add_argument("--board", help="also install boards/NAME.json as the board.json")
    parser.add_argument("--force", action="store_true", help="send every file, changed or not")
    parser.add_argument("--dry-run", action="store_true", help="show what would be sent")
    parser.add_argument("--baud", type=int, default=115200)
    parser.add_argument("--no-reset", action="store_true", help="do not soft-reset afterwards")
    parser.add_argument("--frozen", action="store_true",
                        help="the board's image has the firmware frozen in (firmware/manifest.py):"
                        " send boot.py and main.py only, remove deployed packages")


def board_definition(name: str) -> bytes:
    path = REPO / "boards" / f"{name}.json"
    if not path.exists():
        names = sorted(p.stem for p in (REPO / "boards").glob("*.json"))
        raise UserError(f"no board definition {name!r} (have: {', '.join(names)})")
    return path.read_bytes()


def arch_of(board_json: bytes | None) -> str | None:
    """mpy-cross -march for a board.json (None: portable bytecode)."""
    if not board_json:
        return None
    try:
        chip = json.loads(board_json).get("chip")
    except (ValueError, AttributeError):
        return None
    return ARCH_BY_CHIP.get(chip) if isinstance(chip, str) else None


def _board_json_on(t: SerialTransport) -> bytes | None:
    try:
        return files.get(t, "/board.json")
    except BoardExecError:
        return None


def run(args: argparse.Namespace) -> int:
    extra = {}
    if args.board:
        extra["/board.json"] = board_definition(args.board)
    try:
        with ports.connect(args.port, args.baud) as t:
            # compiled for the board's chip: the definition given, else the one it has
            arch = arch_of(extra.get("/board.json") or _board_json_on(t))
            r = deploy_firmware(t, force=args.force, dry_run=args.dry_run, extra=extra,
                                reset=not args.no_reset, arch=arch, frozen=args.frozen)
    except TransportError as exc:
        raise UserError(f"{args.port}: {exc}") from None
    verb = "would send" if args.dry_run else "sent"
    print(f"{verb} {r.sent} of {r.files} files, {r.payload_bytes} bytes "
          f"({r.wire_bytes} on the wire) in {r.seconds:.2f} s, "
          f"{r.payload_rate / 1024:.1f} KB/s payload"
          + (f"; removed {', '.join(r.removed)}" if args.frozen and r.removed else
             f"; removed {len(r.removed)} stale .py" if r.removed else "")
          + ("; packages frozen in the image" if args.frozen else
             f"; {'.mpy for ' + arch if arch else 'portable .mpy (no native arch)'}"))
    return 0
