# Application layer: configuration (schema, config), the command core. Pure modules: no
# hardware access, so they run unchanged in CPython and the MicroPython VM.
