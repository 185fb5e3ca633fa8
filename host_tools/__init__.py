"""shelfctl: the host tool for walk-out store shelf and gate controllers."""

__version__ = "0.1.0"
