# Deploy's last step, on the board: move a staged firmware into place.
#
# `shelfctl deploy` uploads changed files into STAGE, then writes JOURNAL (the files to move,
# the stale files to remove) and calls finish(). A power cut before the journal exists leaves
# the old firmware untouched (only the staging directory is garbage, cleared next deploy); a
# cut after it is finished by boot.py at the next start, so the board never runs half of one
# firmware and half of another for more than the moment of the cut.

import json
import os

STAGE = "/.deploy-new"
JOURNAL = "/.deploy-journal"


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _makedirs(path):
    parts = [p for p in path.split("/") if p]
    cur = ""
    for p in parts:
        cur += "/" + p
        if not _exists(cur):
            os.mkdir(cur)


def _rmtree(path):
    try:
        entries = [e[0] for e in os.ilistdir(path)]
    except OSError:
        return
    for name in entries:
        sub = path + "/" + name
        try:
            os.remove(sub)
        except OSError:
            _rmtree(sub)
    os.rmdir(path)


def write_journal(files, remove):
    tmp = JOURNAL + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps({"files": files, "remove": remove}))
    os.rename(tmp, JOURNAL)


def finish():
    """Complete a journalled swap, if one is pending; returns the files moved."""
    try:
        with open(JOURNAL) as f:
            plan = json.loads(f.read())
    except (OSError, ValueError):
        return 0
    moved = 0
    for path in plan.get("files", ()):
        src = STAGE + path
        if not _exists(src):
            continue  # moved before the cut
        if _exists(path):
            os.remove(path)
        _makedirs(path[:path.rfind("/")])
        os.rename(src, path)
        moved += 1
    for path in plan.get("remove", ()):
        if _exists(path):
            try:
                os.remove(path)
            except OSError:  # a directory (a package a frozen image now holds)
                _rmtree(path)
    os.remove(JOURNAL)
    _rmtree(STAGE)
    return moved
