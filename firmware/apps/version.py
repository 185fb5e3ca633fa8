# The firmware's version, reported in telemetry and status; `shelfctl deploy` compares it.
VERSION = "0.3.0"
