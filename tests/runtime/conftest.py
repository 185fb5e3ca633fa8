# Runtime tests run firmware modules in CPython (asyncio, real sockets): firmware/ on sys.path,
# MicroPython's `micropython`, tick functions and asyncio.sleep_ms stood in.
from pathlib import Path

from host_tools.firmware import HW_DIR, use_firmware

use_firmware(Path(__file__).resolve().parents[1] / "firmware" / "support", HW_DIR)
