# Runs first after every reset; kept short so the REPL is reachable at once.
from apps import safemode

if safemode.check():
    print("safe mode:", safemode.reason, "- application not started")
