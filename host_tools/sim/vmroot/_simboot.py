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
