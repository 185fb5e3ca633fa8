# MicroPython freeze manifest: builds the firmware packages into a MicroPython image, so their
# bytecode runs from flash instead of being loaded into the heap (docs/runtime.md, "Heap with
# frozen firmware"). Read by MicroPython's manifest tool at build time, never run on a board:
# `shelfctl deploy` and the mpy-cross tests skip this file.
#
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/abs/path/to/firmware/manifest.py
#
# boot.py and main.py stay files on the board (MicroPython runs them by name) with config.json
# and board.json. A board's sys.path searches '' before '.frozen': remove any deployed
# core/ drivers/ net/ apps/ .mpy files, or they shadow the frozen modules.

# FROZEN_MANIFEST replaces the port's own manifest, which is where asyncio (and the rest of a
# stock image) is frozen: include it, unless the including manifest brings its own base
# (include("firmware/manifest.py", port_manifest=False)).
options.defaults(port_manifest=True)
if options.port_manifest:
    include("$(PORT_DIR)/boards/manifest.py")

# The firmware's packages, relative to this file's directory.
for name in ("core", "drivers", "net", "apps"):
    package(name)
