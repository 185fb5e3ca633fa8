# Starts the application unless boot.py chose safe mode. apps.device.run() does not return;
# on an unhandled error it logs, waits with backoff and resets the board.
from apps import safemode

if safemode.reason is None:
    from apps import device

    device.run()
