"""`shelfctl provision`: make boards into store devices: config.json, board.json and the
broker's CA certificate onto one board (--config FILE --port P) or a fleet (--inventory FILE),
several boards in parallel with a progress view.

Every device's config is built and checked with the firmware's own schema first
(host_tools.provision_inventory, host_tools.provision_config): a bad row stops everything
before any board is touched. Then each board goes through host_tools.provision_board's steps;
one board failing does not stop the others. Exit code 0 when every board is done, 1 when one
failed, 2 for a mistake in the input (for --config, also a missing, busy or wrong board).
Passwords are never printed: --dry-run masks them, messages are scrubbed of them.
docs/provisioning.md has the whole story.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from host_tools.board import ports
from host_tools.board.transport import BoardExecError, TransportError
from host_tools.errors import UserError
from host_tools.provision_board import Options, ProvisionError, provision_board
from host_tools.provision_config import DevicePlan, fw, scrub
from host_tools.provision_inventory import plan_config, plan_inventory


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--config", metavar="FILE", type=Path,
                      help="one device: its config.json settings (JSON or TOML), secrets by "
                           "reference; needs --port")
    what.add_argument("--inventory", metavar="FILE", type=Path,
                      help="a fleet: CSV or TOML, one device a row with its port")
    parser.add_argument("--port", help="with --config: the board's port path or USB serial "
                                       "number (see `shelfctl ports`)")
    parser.add_argument("--site", metavar="FILE", type=Path,
                        help="settings every device shares (TOML): store, wifi, broker, CA")
    parser.add_argument("--board", metavar="NAME",
                        help="board definition boards/NAME.json for every device (default: "
                             "the site's or the row's `board`)")
    parser.add_argument("--deploy", action="store_true",
                        help="deploy the firmware onto boards that have none")
    parser.add_argument("--wait-online", type=float, default=0, metavar="SECONDS",
                        help="after the reset, wait until each device publishes `online` on "
                             "its broker (this computer must reach the broker)")
    parser.add_argument("--dry-run", action="store_true",
                        help="show what would be written (passwords masked); touch no board")
    parser.add_argument("--jobs", type=int, default=4, help="boards at a time (default 4)")
    parser.add_argument("--baud", type=int, default=115200)


# ---- the progress view ---------------------------------------------------------------------

@dataclass
class Row:
    port: str
    device: str
    step: str = "waiting"
    result: str = ""  # "", "ok", "failed"
    detail: str = ""


class Progress:
    """One line per board (port, device, step, result): a live table on a terminal, plain
    lines as things happen elsewhere (logs, CI)."""

    def __init__(self, rows: list[Row], verbose: bool) -> None:
        self.rows = rows
        self.verbose = verbose
        self.console = Console(highlight=False)
        self.lock = threading.Lock()
        self.live = (Live(get_renderable=self._table, console=self.console,
                          refresh_per_second=8) if self.console.is_terminal else None)

    def _table(self) -> Table:
        table = Table(box=None, pad_edge=False)
        for name in ("port", "device", "step", ""):
            table.add_column(name)
        with self.lock:
            for r in self.rows:
                mark = {"ok": "[green]ok[/]", "failed": "[red]failed[/]"}.get(r.result, "...")
                table.add_row(r.port, r.device, r.step, mark)
        return table

    def _line(self, r: Row, text: str) -> None:
        if self.live is not None:
            self.live.console.print(f"{r.port} {r.device}: {text}", markup=False)
        else:
            with self.lock:
                print(f"{r.port} {r.device}: {text}", flush=True)

    def step(self, i: int, text: str) -> None:
        r = self.rows[i]
        with self.lock:
            r.step = text
        if self.live is None:
            self._line(r, text)

    def note(self, i: int, text: str) -> None:
        if self.verbose:
            self._line(self.rows[i], f"  {text}")

    def done(self, i: int, ok: bool, detail: str = "") -> None:
        r = self.rows[i]
        with self.lock:
            r.result, r.detail = ("ok" if ok else "failed"), detail
            if ok:
                r.step = "done"
        if self.live is None:
            self._line(r, "ok" if ok else f"failed: {detail}")

    def __enter__(self) -> Progress:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()


# ---- before any board ------------------------------------------------------------------------

def _plans(args: argparse.Namespace) -> list[DevicePlan]:
    if args.config is not None:
        if not args.port:
            raise UserError("--config needs --port (the board to provision)")
        return [plan_config(args.config, args.port, args.site, args.board)]
    if args.port:
        raise UserError("--port goes with --config; an inventory names each device's port")
    return plan_inventory(args.inventory, args.site, args.board)


def show_dry_run(plans: list[DevicePlan]) -> None:
    print(f"would provision {len(plans)} device(s); a dry run writes nothing")
    for p in plans:
        print(f"\n{p.where}: {p.device} on {p.port} (board {p.board_name}, chip {p.chip})")
        print(f"  /board.json   {len(p.board_json)} bytes, boards/{p.board_name}.json")
        for remote, data in p.files.items():
            print(f"  {remote:<13} {len(data)} bytes, {p.ca_path}")
        lanes = "" if p.calibrated is None else (
            "; lanes without calibration keep the board's, if it has one for this device")
        print(f"  /config.json  (passwords masked{lanes}):")
        for line in config_lines(p.masked()):
            print(f"    {line}")


def config_lines(cfg: dict) -> list[str]:
    """config.json as docs/config.md shows it: a key a line, a lane a line."""
    lines = ["{"]
    for i, (key, value) in enumerate(cfg.items()):
        comma = "," if i < len(cfg) - 1 else ""
        if isinstance(value, list) and value:
            lines.append(f"  {json.dumps(key)}: [")
            lines += [f"    {json.dumps(v)}{',' if j < len(value) - 1 else ''}"
                      for j, v in enumerate(value)]
            lines.append(f"  ]{comma}")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}{comma}")
    return lines + ["}"]


def _resolve(plans: list[DevicePlan]) -> list[str | UserError]:
    """Each plan's port path, or why it has none; UserError if two rows name one board."""
    out: list[str | UserError] = []
    seen: dict[str, str] = {}
    for p in plans:
        try:
            path = ports.resolve(p.port)
        except UserError as exc:
            out.append(exc)
            continue
        if path in seen:
            raise UserError(f"{p.where}: port {p.port} is {path}, already on {seen[path]}")
        seen[path] = p.where
        out.append(path)
    return out


def _warm_compile_cache() -> None:
    # Parallel deploys would all compile the firmware into the same cache at once: compile
    # it here, once; each deploy then finds every file cached.
    from host_tools.mpy import MpyCrossError, compile_tree

    with tempfile.TemporaryDirectory() as tmp:
        try:
            compile_tree(Path(tmp))
        except MpyCrossError as exc:
            raise UserError(str(exc)) from None


def _check_brokers(plans: list[DevicePlan]) -> None:
    """--wait-online needs this computer to reach each broker: say so before any board."""
    for url in sorted({p.config["broker"]["url"] for p in plans}):
        _, host, port = fw.parse_url(url)
        try:
            socket.create_connection((host, port), timeout=5).close()
        except OSError as exc:
            raise UserError(f"broker unreachable: {url} ({exc.strerror or exc})") from None


# ---- the boards ------------------------------------------------------------------------------

def _message(exc: BaseException, port: str) -> str:
    if isinstance(exc, TransportError):
        # the transport quotes the board's last bytes after "(got": board output, not ours
        return f"{port}: the board stopped answering ({str(exc).split(' (got ')[0]})"
    if isinstance(exc, BoardExecError):
        return f"{port}: error on the board: {exc}"
    return str(exc)


def _provision_one(i: int, plan: DevicePlan, target: str | UserError, opts: Options,
                   view: Progress) -> BaseException | None:
    """Run one board; the exception that stopped it (already shown), or None."""
    try:
        if isinstance(target, UserError):
            raise target
        provision_board(plan, target, opts, lambda s: view.step(i, s),
                        lambda s: view.note(i, plan.scrub(s)))
    except Exception as exc:
        if view.verbose and not isinstance(exc, UserError | ProvisionError):
            view.note(i, plan.scrub(traceback.format_exc()))
        view.done(i, False, plan.scrub(_message(exc, view.rows[i].port)))
        return exc
    view.done(i, True)
    return None


def run(args: argparse.Namespace) -> int:
    verbose = getattr(args, "verbose", False)
    if args.jobs < 1:
        raise UserError("--jobs must be 1 or more")
    plans = _plans(args)
    if args.dry_run:
        show_dry_run(plans)
        return 0
    targets = _resolve(plans)
    if len(plans) == 1 and isinstance(targets[0], UserError):
        raise targets[0]  # one board, and it is not there: a one-line usage error
    if args.deploy:
        _warm_compile_cache()
    if args.wait_online:
        _check_brokers(plans)
    opts = Options(args.baud, args.deploy, args.wait_online)
    rows = [Row(str(t if isinstance(t, str) else p.port), p.device)
            for p, t in zip(plans, targets)]
    start = time.monotonic()
    with Progress(rows, verbose) as view, ThreadPoolExecutor(max_workers=args.jobs) as pool:
        errors = list(pool.map(lambda i: _provision_one(i, plans[i], targets[i], opts, view),
                               range(len(plans))))
    failed = [(p, r) for p, r, e in zip(plans, rows, errors) if e is not None]
    print(f"provisioned {len(plans) - len(failed)} of {len(plans)} board(s) in "
          f"{time.monotonic() - start:.1f} s")
    if len(plans) == 1 and isinstance(errors[0], UserError):
        raise UserError(rows[0].detail)  # --config: a user mistake keeps exit code 2
    for p, r in failed:
        detail = r.detail.removeprefix(f"{r.port}: ")  # the line names the port already
        print(scrub(f"shelfctl: {p.where}: {p.device} on {r.port}: {detail}", p.secrets),
              file=sys.stderr)
    return 1 if failed else 0
