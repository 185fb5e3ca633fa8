# Application layer: configuration (schema, config), the command core, and the device runtime
# built on them. schema, config and commands are pure (no hardware access): they run
# unchanged in CPython and the MicroPython VM.
