# Run by the virtual board at every boot, before boot.py: makes the WebAssembly VM's
# filesystem look like an ESP32's flash to the firmware and to host tools.
# - OSError numbers: the VM reports Emscripten's (ENOENT is 44 there); a board reports
#   MicroPython's, which the errno module lists (ENOENT 2). Tools such as mpremote test them.
# - The root lists only the flash: the VM's own /tmp, /dev, /proc, /home and the board's
#   hardware stand-ins (/_sim) are not on a board's filesystem.
import builtins
import os

_ERRNO = {44: 2, 20: 17, 31: 21, 54: 20, 55: 39, 28: 22, 2: 13, 8: 9, 29: 5, 51: 28, 63: 1,
          10: 16}
_HIDDEN = ("_sim", "tmp", "dev", "proc", "home")


def _mapped(fn):
    def call(*args):
        try:
            return fn(*args)
        except OSError as exc:
            if exc.args and exc.args[0] in _ERRNO:
                raise OSError(_ERRNO[exc.args[0]]) from None
            raise

    return call


def _at_root(path):
    return path in ("/", "") or (path == "." and os.getcwd() == "/")


_listdir = _mapped(os.listdir)
_ilistdir = _mapped(os.ilistdir)


def listdir(path="."):
    names = _listdir(path)
    if _at_root(path):
        names = [n for n in names if n not in _HIDDEN]
    return names


def ilistdir(path="."):
    # (name, type, inode, size) as on a board; the VM leaves the size out
    base = "" if path in (".", "") else path.rstrip("/") + "/"
    for entry in _ilistdir(path):
        if _at_root(path) and entry[0] in _HIDDEN:
            continue
        size = 0
        if entry[1] == 0x8000:
            try:
                size = os.stat(base + entry[0])[6]
            except OSError:
                pass
        yield (entry[0], entry[1], entry[2] if len(entry) > 2 else 0, size)


for _name in ("stat", "remove", "rename", "mkdir", "rmdir", "chdir", "statvfs"):
    if hasattr(os, _name):
        setattr(os, _name, _mapped(getattr(os, _name)))
os.listdir = listdir
os.ilistdir = ilistdir
builtins.open = _mapped(builtins.open)


# - TCP: the VM has no sockets and its asyncio no open_connection; the virtual board reaches
#   the host's network through the _simnet bridge (vboard.mjs), so the firmware's
#   asyncio.open_connection(host, port) works unchanged. No TLS here (the VM has no ssl).
import asyncio  # noqa: E402
import binascii  # noqa: E402

import _simnet  # noqa: E402


class _Stream:
    def __init__(self, sid):
        self.sid = sid
        self.closed = False

    async def read(self, n=-1):
        if self.closed:
            return b""
        data = await _simnet.read(self.sid, 4096 if n < 0 else n)
        return binascii.unhexlify(data) if data else b""

    async def readexactly(self, n):
        out = b""
        while len(out) < n:
            part = await self.read(n - len(out))
            if not part:
                raise EOFError("connection closed")
            out += part
        return out

    def write(self, data):
        if self.closed or not _simnet.write(self.sid, binascii.hexlify(data).decode()):
            raise OSError(104)  # ECONNRESET

    async def drain(self):
        if self.closed:
            raise OSError(104)

    def close(self):
        if not self.closed:
            self.closed = True
            _simnet.close(self.sid)

    async def wait_closed(self):
        pass


async def _open_connection(host, port, ssl=None, server_hostname=None):
    if ssl is not None:
        raise OSError(95)  # EOPNOTSUPP: no TLS on the virtual board
    try:
        sid = await _simnet.connect(host, port)
    except Exception:
        raise OSError(111) from None  # ECONNREFUSED (or unreachable)
    s = _Stream(sid)
    return s, s


if not hasattr(asyncio, "open_connection"):
    asyncio.open_connection = _open_connection


# - the hardware: fake pins and chips wired as board.json says, loads from the host;
#   machine.reset() and an unfed machine.WDT restart the virtual board for real.
import json as _json  # noqa: E402

import _simctl  # noqa: E402
import _simhw  # noqa: E402
import machine  # noqa: E402

_simhw.setup(_json.loads(_simctl.start()))


def _reset():
    _simctl.reset()
    raise machine.BoardReset("machine.reset()")  # nothing after a reset runs


machine.reset = _reset


async def _watchdog():
    while True:
        await asyncio.sleep_ms(500)
        for wdt in machine.WDT.instances:
            if wdt.expired():
                print("watchdog: reset")
                _reset()


asyncio.create_task(_watchdog())
