"""`shelfctl calibrate`: zero and span one lane's load cell, then check it with a second weight.

Two ways to the board (docs/calibration.md); both read raw counts, average and compute on the
host with the firmware's own core.lane.LaneCal, and write nothing before the save:
  --port P                  over its serial port (calibrate_port.py): main.py is stopped, the
                            lane's raw HX711 counts are read on the board with the firmware's
                            own driver, the result goes into config.json (read, modify, write)
                            and the board restarts.
  --broker URL --device ID  over MQTT to the running device (calibrate_mqtt.py): the lane's
                            smoothed raw level through `status`, and one `calibrate` with
                            offset and counts_per_gram at the end, which the device persists.

Without a step flag it is a wizard: empty the lane -> tare; a known weight -> span; a second
known weight -> check; save. For scripts, one step a run: --tare, --span-grams G or
--check-grams G, with --yes to skip the prompt and --json for a JSON line; --tare saves the
offset with the lane's current counts per gram, --span-grams the counts per gram with its
current offset, --check-grams saves nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import select
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from host_tools.errors import UserError
from host_tools.monitor.broker_args import add_credential_arguments

MAX_GRAMS = 100000.0  # the firmware's limit for a known weight (apps.fields.MAX_GRAMS)
CHECK_FLOOR_G = 1.0  # a check within this many grams passes whatever the percentage
PORT_SAMPLES = 20  # raw readings averaged per step over the serial port (2 s at 10 SPS)


class CalibrationFailed(RuntimeError):
    """The board or the lane did not let the step finish (exit code 1, one line)."""


class Cancelled(Exception):
    """The user said no at a prompt (exit code 130, like Ctrl-C)."""


# ---- pure math ---------------------------------------------------------------------------------

@dataclass
class Stats:
    mean: float
    stdev: float
    n: int  # readings kept
    rejected: int  # outliers left out (HX711 glitches)


def robust_stats(values: list[int] | list[float]) -> Stats:
    """Mean and standard deviation of the readings, leaving out outliers more than 6 median
    absolute deviations from the median: one misframed HX711 read must not move a tare."""
    if not values:
        raise ValueError("no readings")
    med = statistics.median(values)
    mad = max(statistics.median(abs(v - med) for v in values), 1.0)
    kept = [v for v in values if abs(v - med) <= 6 * mad]
    stdev = statistics.stdev(kept) if len(kept) > 1 else 0.0
    return Stats(statistics.fmean(kept), stdev, len(kept), len(values) - len(kept))


def is_still(values: list[int] | list[float]) -> bool:
    """Do the first and second halves of the readings agree within their noise? A weight
    still settling or a hand on the lane shows as a trend; this needs no calibration."""
    if len(values) < 6:
        return True
    half = len(values) // 2
    a = robust_stats(values[:half])
    b = robust_stats(values[half:])
    # the noise from reading-to-reading steps, which a slow trend hardly changes (the spread
    # of the whole window would grow with the very trend it is meant to find); the median
    # of |step| is 0.6745 * sqrt(2) sigma for Gaussian noise, and ignores a glitch
    steps = [abs(y - x) for x, y in zip(values, values[1:])]
    noise = max(statistics.median(steps) / (0.6745 * math.sqrt(2)), 1.0)
    # the halves' means differ by 2 sigma / sqrt(n) for noise alone: allow six times that
    return abs(a.mean - b.mean) <= 12 * noise / math.sqrt(len(values))


def settled(window: list[float], spread_g: float) -> bool:
    """Readings (grams) that stay within spread_g of each other."""
    return len(window) > 1 and max(window) - min(window) <= spread_g


def check_result(read_g: float, known_g: float, max_error_pct: float) -> dict:
    """What the lane reads against what lies on it; ok within max_error_pct % (or
    CHECK_FLOOR_G grams, for small weights)."""
    error_g = read_g - known_g
    error_pct = 100.0 * error_g / known_g
    ok = abs(error_pct) <= max_error_pct or abs(error_g) <= CHECK_FLOOR_G
    return {"grams": known_g, "read_g": round(read_g, 2), "error_g": round(error_g, 2),
            "error_pct": round(error_pct, 3), "ok": ok}


# ---- the two ways to a board share this face -----------------------------------------------------

class Session(Protocol):
    where: str  # "lane 0 of shelf-1 (store s1)", for messages
    lane: int
    changed: list[str]  # what may already have changed on the device, for a cancel message
    save_question: str  # the wizard's last question, before save()

    def reading(self) -> str: ...  # what the lane reads now, one short line
    def tare(self) -> dict: ...
    def span(self, grams: float) -> dict: ...
    def check(self, grams: float) -> float: ...  # grams the lane reads
    def save(self) -> dict: ...
    def close(self) -> None: ...


class HostSteps:
    """Tare, span and check computed here with the firmware's LaneCal (`self.cal`) from what
    the session's measure() averages; both sessions send the result only at save()."""

    cal: Any  # core.lane.LaneCal, loaded with the firmware
    measure: Callable[[], Stats]

    def tare(self) -> dict:
        st = self.measure()
        self.cal.tare(st.mean)
        return {"offset": self.cal.offset, "noise_counts": round(st.stdev, 1)}

    def span(self, grams: float) -> dict:
        from core.lane import CalibrationError

        st = self.measure()
        cal = self.cal
        try:
            cal.span(st.mean, grams)
        except CalibrationError as exc:
            raise CalibrationFailed(f"span: {exc}") from None
        cpg = cal.counts_per_gram
        return {"counts_per_gram": round(cpg, 4), "noise_g": round(st.stdev / abs(cpg), 3)}

    def check(self, grams: float) -> float:
        return self.cal.grams(self.measure().mean)


# ---- prompts -------------------------------------------------------------------------------------

class Prompter:
    """The wizard's side of the terminal. Text goes to `out` (stderr under --json, so stdout
    holds only the JSON); answers come from input(). On a terminal the lane's reading is
    shown live while the wizard waits for Enter."""

    def __init__(self, out: TextIO, live: bool) -> None:
        self.out = out
        self.live = live

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def ask(self, prompt: str) -> str:
        self.out.write(prompt)
        self.out.flush()
        try:
            return input()
        except EOFError:
            raise UserError("no answer at the prompt (end of input); scripts run one step "
                            "a run with --yes: --tare, --span-grams G, --check-grams G") from None

    def ask_grams(self, prompt: str, optional: bool = False) -> float | None:
        while True:
            text = self.ask(prompt).strip().lower().removesuffix("g").strip()
            if not text and optional:
                return None
            try:
                grams = float(text)
            except ValueError:
                grams = float("nan")
            if 0 < grams <= MAX_GRAMS:
                return grams
            self.say(f"    a weight in grams, more than 0 and at most {MAX_GRAMS:g}")

    def wait(self, prompt: str, reading: Callable[[], str]) -> None:
        """Show the prompt and what the lane reads; return once Enter is pressed."""
        if not self.live:
            self.say(f"    lane now: {reading()}")
            self.ask(prompt + " ")
            return
        self.say(prompt)
        while True:
            self.out.write(f"\r    lane now: {reading():<48}")
            self.out.flush()
            ready, _, _ = select.select([sys.stdin], [], [], 0.5)
            if ready:
                if not sys.stdin.readline():
                    raise UserError("no answer at the prompt (end of input)")
                # the echoed Enter may have come while a reading was fetched, and that
                # reading was then drawn on the new line: erase it
                self.out.write("\r\x1b[K")
                return

    def confirm(self, prompt: str, default: bool) -> bool:
        answer = self.ask(prompt).strip().lower()
        return default if not answer else answer in ("y", "yes")


# ---- the verb ------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", metavar="P", help="the board's serial port (path or USB "
                       "serial number); the application is stopped while calibrating")
    where.add_argument("--broker", metavar="URL", help="mqtt:// or mqtts:// URL of the store's "
                       "broker; the running device calibrates itself")
    parser.add_argument("--device", metavar="ID", help="device id (with --broker)")
    parser.add_argument("--store", metavar="S",
                        help="store id (with --broker; default: found from the device's status)")
    parser.add_argument("--lane", type=int, default=0, help="lane number, from 0 (default 0)")
    step = parser.add_mutually_exclusive_group()
    step.add_argument("--tare", action="store_true", help="one step: zero the empty lane")
    step.add_argument("--span-grams", type=float, metavar="G",
                      help="one step: G grams lie on the tared lane: set its counts per gram")
    step.add_argument("--check-grams", type=float, metavar="G",
                      help="one step: G grams lie on the lane: compare what it reads")
    parser.add_argument("--yes", action="store_true",
                        help="with a step: do not ask to press Enter first")
    parser.add_argument("--json", action="store_true",
                        help="print the result as one JSON line (messages go to stderr)")
    parser.add_argument("--max-error-pct", type=float, default=1.0, metavar="P",
                        help=f"a check passes within P %% of its weight or {CHECK_FLOOR_G:g} g "
                             "(default 1)")
    parser.add_argument("--samples", type=int, metavar="N",
                        help="readings averaged per step (default 20 raw readings over --port, "
                             "10 smoothed levels over --broker)")
    parser.add_argument("--baud", type=int, default=115200, help="with --port (default 115200)")
    parser.add_argument("--prefix", default="store/v1", help="with --broker: topic prefix "
                        "(default store/v1)")
    add_credential_arguments(parser)  # with --broker
    parser.add_argument("--timeout", type=float, default=10.0, metavar="S",
                        help="with --broker: seconds to wait for each answer (default 10)")


def _check_args(args: argparse.Namespace) -> None:
    if args.broker and not args.device:
        raise UserError("--broker needs --device ID (the device to calibrate)")
    if args.port:
        extra = [f for f, v in (("--device", args.device), ("--store", args.store),
                                ("--user", args.user), ("--password-file", args.password_file),
                                ("--cafile", args.cafile)) if v]
        if extra:
            raise UserError(f"{extra[0]} is for --broker, not --port")
    if args.lane < 0:
        raise UserError(f"--lane must be 0 or more, not {args.lane}")
    for flag, grams in (("--span-grams", args.span_grams), ("--check-grams", args.check_grams)):
        if grams is not None and not 0 < grams <= MAX_GRAMS:
            raise UserError(f"{flag} must be more than 0 and at most {MAX_GRAMS:g} g")
    if args.yes and not _one_step(args):
        raise UserError("--yes skips the prompt of one step: give --tare, --span-grams G or "
                        "--check-grams G")
    if args.samples is not None and not 3 <= args.samples <= 1000:
        raise UserError("--samples must be 3..1000")
    if not 0 < args.max_error_pct <= 100:
        raise UserError("--max-error-pct must be more than 0 and at most 100")
    if args.timeout <= 0:
        raise UserError("--timeout must be more than 0 seconds")


def _one_step(args: argparse.Namespace) -> bool:
    return bool(args.tare or args.span_grams is not None or args.check_grams is not None)


def _open(args: argparse.Namespace, say: Callable[[str], None]) -> Session:
    if args.port:
        from host_tools.calibrate_port import PortSession

        return PortSession.open(args.port, args.lane, baud=args.baud,
                                samples=args.samples or PORT_SAMPLES, say=say)
    from host_tools.calibrate_mqtt import MqttSession

    return MqttSession.open(args, say)


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    out = sys.stderr if args.json else sys.stdout
    ui = Prompter(out, live=sys.stdin.isatty() and out.isatty())
    session = None
    try:
        session = _open(args, ui.say)
        if _one_step(args):
            result = one_step(session, ui, args)
        else:
            result = wizard(session, ui, args.max_error_pct)
    except (KeyboardInterrupt, Cancelled):
        print(f"\nshelfctl: calibration cancelled: {_what_changed(session)}", file=sys.stderr)
        return 130
    finally:
        if session is not None:
            session.close()
    if args.json:
        print(json.dumps(result))
    check = result.get("check")
    return 1 if check and not check["ok"] else 0


def _what_changed(session: Session | None) -> str:
    # Only the save changes a board: Ctrl-C can catch it on the way
    if session is None or not session.changed:
        return "nothing changed"
    return f"lane {session.lane}: {'; '.join(session.changed)}"


def one_step(s: Session, ui: Prompter, args: argparse.Namespace) -> dict:
    """One step for scripts, saved at once: a tare with the lane's current counts per gram,
    a span with its current offset (a run keeps no state for the next); a check saves
    nothing."""
    result: dict = {"lane": s.lane}
    if args.tare:
        if not args.yes:
            ui.wait(f"Take everything off lane {s.lane}, then press Enter.", s.reading)
        result.update(s.tare())
        result.update(s.save())
        ui.say(f"lane {s.lane} tared: offset {result['offset']}{_saved(result)}")
    elif args.span_grams is not None:
        grams = args.span_grams
        if not args.yes:
            ui.wait(f"Put {grams:g} g on lane {s.lane}; press Enter when it rests still.",
                    s.reading)
        result.update(s.span(grams))
        result.update(s.save())
        ui.say(f"lane {s.lane} spanned with {grams:g} g: "
               f"{result['counts_per_gram']:.4f} counts per gram{_saved(result)}")
    else:
        grams = args.check_grams
        if not args.yes:
            ui.wait(f"Put {grams:g} g on lane {s.lane}; press Enter when it rests still.",
                    s.reading)
        result["check"] = check_result(s.check(grams), grams, args.max_error_pct)
        ui.say(_check_line(s.lane, result["check"], args.max_error_pct))
    return result


def wizard(s: Session, ui: Prompter, max_error_pct: float) -> dict:
    """Empty lane -> tare; known weight -> span; second weight -> check; save."""
    lane = s.lane
    result: dict = {"lane": lane}
    ui.say(f"Calibrating {s.where}. Ctrl-C at any prompt cancels; nothing is written before "
           "the last step.")
    ui.wait(f"1/4 Take everything off lane {lane}. Press Enter when it is empty and still.",
            s.reading)
    result.update(s.tare())
    ui.say(f"    tared: offset {result['offset']} counts")
    grams = ui.ask_grams("2/4 Known weight for the span, in grams: ")
    assert grams is not None
    ui.wait(f"    Put the {grams:g} g weight on lane {lane}. Press Enter when it rests still.",
            s.reading)
    result.update(s.span(grams))
    ui.say(f"    spanned: {result['counts_per_gram']:.4f} counts per gram")
    check_g = ui.ask_grams("3/4 Second known weight to check, in grams (Enter: skip): ",
                           optional=True)
    if check_g is not None:
        ui.wait(f"    Put the {check_g:g} g weight on lane {lane} (only it). Press Enter when "
                "it rests still.", s.reading)
        result["check"] = check_result(s.check(check_g), check_g, max_error_pct)
        ui.say("    " + _check_line(lane, result["check"], max_error_pct))
    failed = "check" in result and not result["check"]["ok"]
    # over the port the application starts again on an empty lane, so the weight leaves no
    # event behind; a running device sees it come off either way
    save = s.save_question
    question = (f"4/4 The check failed. Take the weight off lane {lane}. Save anyway? [y/N] "
                if failed else f"4/4 Take the weight off lane {lane}. {save} [Y/n] ")
    if not ui.confirm(question, default=not failed):
        raise Cancelled()
    result.update(s.save())
    ui.say(f"    done{_saved(result)}")
    return result


def _saved(result: dict) -> str:
    if result.get("restarted"):
        return " (saved in config.json, board restarted)"
    return " (saved by the device)" if result.get("saved") else ""


def _check_line(lane: int, check: dict, max_error_pct: float) -> str:
    verdict = "ok" if check["ok"] else f"FAILED (more than {max_error_pct:g} %)"
    return (f"lane {lane} reads {check['read_g']:.2f} g for {check['grams']:g} g: error "
            f"{check['error_g']:+.2f} g ({check['error_pct']:+.2f} %), {verdict}")
