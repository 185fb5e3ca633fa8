"""A board over its serial port: the transport (raw REPL, raw-paste) and file operations."""
