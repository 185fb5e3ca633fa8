# CPython only (the VM runner does not read this): firmware/ and the test support modules
# (fake `machine`, fake HX711) on sys.path, `micropython` stood in, as on the board.
from pathlib import Path

from host_tools.firmware import HW_DIR, use_firmware

use_firmware(Path(__file__).resolve().parent / "support", HW_DIR)
