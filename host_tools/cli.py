"""shelfctl: parse the command line, then call one verb module.

Exit codes: 0 ok, 1 failure, 2 usage or user mistake. A user mistake gets one line on stderr,
never a traceback (`--verbose` shows the traceback of unexpected errors).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from host_tools import __version__
from host_tools.errors import UserError

# (group, verb) -> (module, help); verb "" for a verb of its own (`shelfctl deploy`). Modules
# expose add_arguments(parser) and run(args) -> int.
VERBS: dict[tuple[str, str], tuple[str, str]] = {
    ("trace", "replay"): ("host_tools.trace.replay", "replay a trace through the firmware"),
    ("trace", "score"): ("host_tools.trace.score", "score detection against a trace's truth"),
    ("trace", "gen"): ("host_tools.trace.gen", "generate realistic shelf traces with truth"),
    ("flash", ""): ("host_tools.flash", "write MicroPython onto an ESP32 board with esptool"),
    ("deploy", ""): ("host_tools.deploy", "compile the firmware and put what changed on a board"),
    ("ports", ""): ("host_tools.ports_cmd", "serial ports, their USB ids and a guess of the board"),
    ("provision", ""): ("host_tools.provision", "config.json, board.json and CA onto boards"),
    ("console", ""): ("host_tools.console", "a serial terminal on a board (Ctrl-] quits)"),
    ("monitor", ""): ("host_tools.monitor", "live view of devices, events, carts and receipts"),
    ("replay", ""): ("host_tools.replay", "publish a monitor --record recording again"),
    ("calibrate", ""): ("host_tools.calibrate", "tare, span and check a lane's load cell"),
    ("sim", "board"): ("host_tools.sim.board_cmd", "run one virtual board on a serial pty"),
    ("sim", "ctl"): ("host_tools.sim.ctl_cmd", "act on a running virtual board's hardware"),
    ("sim", "store"): ("host_tools.sim.store", "a virtual store of boards, played by shoppers"),
}
GROUP_HELP = {"trace": "shelf-trace/1 recordings: replay, score, generate",
              "sim": "virtual boards: the real firmware in the MicroPython VM"}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser. Only the verb named in `argv` gets its module imported for its
    arguments (others show their one-line help): starting shelfctl stays quick however heavy
    a verb's imports are (esptool, rich). argv None: every verb is imported."""
    chosen = None if argv is None else [a for a in argv if not a.startswith("-")][:2]
    parser = argparse.ArgumentParser(
        prog="shelfctl",
        description="Flash, deploy, provision, monitor and test walk-out store shelf and gate "
        "controllers.",
    )
    parser.add_argument("--version", action="version", version=f"shelfctl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    groups = parser.add_subparsers(dest="group", metavar="COMMAND")
    group_parsers: dict[str, argparse._SubParsersAction] = {}

    def wanted(group: str, verb: str) -> bool:
        if chosen is None:
            return True
        return chosen[:1] == [group] and (not verb or chosen[1:2] == [verb])

    for (group, verb), (module_name, help_text) in VERBS.items():
        if not verb:  # a verb of its own: `shelfctl deploy ...`
            vp = groups.add_parser(group, help=help_text, description=help_text)
        else:
            if group not in group_parsers:
                gp = groups.add_parser(group, help=GROUP_HELP.get(group))
                group_parsers[group] = gp.add_subparsers(dest="verb", metavar="VERB")
            vp = group_parsers[group].add_parser(verb, help=help_text, description=help_text)
        vp.set_defaults(_module=module_name)
        if wanted(group, verb):
            _module(module_name).add_arguments(vp)
        # -v after the verb too (unless the verb has its own); SUPPRESS keeps `shelfctl -v VERB`
        taken = vp._option_string_actions
        flags = [f for f in ("-v", "--verbose") if f not in taken]
        if len(flags) == 2:
            vp.add_argument(*flags, action="store_true", default=argparse.SUPPRESS,
                            help="more detail, and tracebacks of unexpected errors")
    return parser


def _group_parser(parser: argparse.ArgumentParser, group: str) -> argparse.ArgumentParser:
    for action in parser._subparsers._group_actions:  # argparse keeps subparsers here
        if group in action.choices:
            return action.choices[group]
    return parser


def _module(name: str):
    return importlib.import_module(name)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    module_name = getattr(args, "_module", None)
    if module_name is None:
        # `shelfctl` or `shelfctl trace` alone: the relevant help, and a usage exit code
        if args.group:
            _group_parser(parser, args.group).print_help()
        else:
            parser.print_help()
        return 2
    try:
        return int(_module(module_name).run(args) or 0)
    except KeyboardInterrupt:
        print("shelfctl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # one line for anything the user can act on
        from host_tools.trace.io import TraceError

        if isinstance(e, UserError | TraceError | FileNotFoundError):
            print(f"shelfctl: {e}", file=sys.stderr)
            return 2
        if args.verbose:
            traceback.print_exc()
        print(f"shelfctl: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
