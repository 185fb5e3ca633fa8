# SkipTest that both runners understand: pytest treats unittest.SkipTest as a skip, and the
# VM runner skips on any exception class named SkipTest (MicroPython has no unittest).
try:
    from unittest import SkipTest
except ImportError:

    class SkipTest(Exception):
        pass
