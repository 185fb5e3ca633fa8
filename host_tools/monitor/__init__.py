"""`shelfctl monitor`: devices, events, shoppers' carts and receipts from a store's MQTT traffic.

command.py (the verb), state.py (what the messages say: pure, no I/O), view.py (the rich
terminal view), record.py (one message as one JSON line: --json, --record, replay),
broker_args.py (broker options and connecting, shared with `shelfctl replay`).
"""

from host_tools.monitor.command import add_arguments, run

__all__ = ["add_arguments", "run"]
