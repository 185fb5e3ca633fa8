# Runs first after every reset; kept short so the REPL is reachable at once.
from apps import safemode, swap

# A deploy cut by a power loss after its journal was written: finish moving the new firmware
# in before anything imports it.
if swap.finish():
    print("deploy: finished an interrupted firmware swap")
if safemode.check():
    print("safe mode:", safemode.reason, "- application not started")
