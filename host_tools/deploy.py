"""Put the firmware on a board over its serial port: compiled to .mpy (boot.py and main.py as
source), each file written, verified by SHA-256 on the board, then the board reset by the
caller. The verb `shelfctl deploy` and the virtual store stand on this."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from host_tools.board import files
from host_tools.board.transport import SerialTransport
from host_tools.firmware import FIRMWARE_DIR
from host_tools.mpy import compile_tree


@dataclass
class DeployReport:
    files: int
    bytes: int
    seconds: float


def deploy_firmware(t: SerialTransport, src: Path = FIRMWARE_DIR) -> DeployReport:
    start = time.monotonic()
    total = 0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        written = compile_tree(out, src)
        for rel in written:
            data = (out / rel).read_bytes()
            files.put(t, data, "/" + rel.as_posix())
            total += len(data)
    return DeployReport(len(written), total, round(time.monotonic() - start, 2))


def put_json(t: SerialTransport, obj: object, remote: str) -> None:
    import json

    files.put(t, json.dumps(obj, indent=1).encode(), remote)
