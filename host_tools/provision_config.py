"""One device's config.json, worked out and checked on the host before any board is touched.

A device's settings (the site's, laid under its inventory row or config file) become its
config.json: lanes from a planogram and a calibration, secrets read from the environment or
files, the CA certificate read for copying, the board definition from boards/; then the
firmware's own schema (apps.config, the code the board runs at boot) checks the result.
A DevicePlan holds the secret values: print `masked()`, never `config`.
"""

from __future__ import annotations

import copy
import json
import os
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from host_tools.firmware import REPO, use_firmware

use_firmware()

from apps import config as fw  # noqa: E402  (the firmware's schema, after use_firmware())

BOARDS_DIR = REPO / "boards"
CA_FILE = "ca.pem"  # where the CA goes on the board unless broker.ca_file says otherwise
MASK = "********"
SECRET_SECTIONS = ("wifi", "broker")  # each may hold password_env / password_file
CLIENT_CERT_KEYS = ("cert", "key", "cert_file", "key_file", "client_cert", "client_key")
ROW_KEYS = ("port", "id", "role", "board", "lanes", "planogram", "calibration")
PLANOGRAM_FIELDS = ("lane", "sku", "unit_g", "capacity")  # compact: LANE:SKU:UNIT_G[:CAPACITY]
CALIBRATION_FIELDS = ("lane", "offset", "counts_per_gram")
# config.json's keys in the order docs/config.md lists them (dry runs read top to bottom)
KEY_ORDER = ("device", "store", "role", "board", "wifi", "broker", "ntp", "telemetry_s", "sps",
             "outbox", "gate", "lanes")


class RowError(Exception):
    """One thing wrong with one device (the caller adds file and line)."""


@dataclass
class DevicePlan:
    where: str  # "inventory.csv:7": for every message about this device
    port: str  # a path or a USB serial number, as given
    config: dict = field(repr=False)  # config.json with its passwords: print masked()
    board_name: str
    board_json: bytes  # boards/NAME.json as the board gets it
    chip: str  # the board definition's chip: the board must be one
    files: dict[str, bytes] = field(default_factory=dict)  # other files: board path -> bytes
    secrets: list[str] = field(default_factory=list, repr=False)
    calibrated: set[int] | None = None  # lanes calibrated by the input; None: all of them
    ca_path: str | None = None  # the CA on this computer (to check the device comes online)

    @property
    def device(self) -> str:
        return self.config["device"]

    def masked(self) -> dict:
        out = copy.deepcopy(self.config)
        for section in SECRET_SECTIONS:
            if out.get(section, {}).get("password"):
                out[section]["password"] = MASK
        return out

    def scrub(self, text: str) -> str:
        return scrub(text, self.secrets)


def scrub(text: str, secrets: list[str]) -> str:
    """`text` with every secret masked (secrets under 4 characters would mask ordinary
    words; nothing prints them anyway)."""
    for s in secrets:
        if len(s) >= 4:
            text = text.replace(s, MASK)
    return text


# ---- one device's config -------------------------------------------------------------------

def refuse_inline_secrets(table: dict) -> None:
    for section in SECRET_SECTIONS:
        part = table.get(section)
        if isinstance(part, dict) and "password" in part:
            raise RowError(f"{section}.password: a secret is not accepted in the file: use "
                           f"{section}.password_env = \"VARIABLE\" or "
                           f"{section}.password_file = \"PATH\"")


def merge(base: dict, over: dict) -> dict:
    """`base` with `over` laid on top, tables merged key by key; a password source in `over`
    (password_env or password_file) replaces the one in `base`."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            if "password_env" in value or "password_file" in value:
                out[key].pop("password_env", None)
                out[key].pop("password_file", None)
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _entries(spec: object, what: str, fields: tuple[str, ...], optional: int = 0) -> list[dict]:
    """A compact "0:A:1;1:B:2" string or a TOML list of tables -> [{field: text or value}];
    the last `optional` fields may be left out of a compact entry."""
    if isinstance(spec, list):
        out = []
        for i, item in enumerate(spec):
            if not isinstance(item, dict):
                raise RowError(f"{what}[{i}]: must be a table")
            out.append({"lane": i, **item})
        return out
    if not isinstance(spec, str):
        raise RowError(f"{what}: must be a string like {hint(fields, optional)} or a list "
                       f"of tables")
    out = []
    for part in (p.strip() for p in spec.split(";")):
        if not part:
            continue
        cells = part.split(":")
        if not len(fields) - optional <= len(cells) <= len(fields):
            raise RowError(f"{what}: {part!r} must be {hint(fields, optional)}")
        out.append(dict(zip(fields, cells)))
    return out


def hint(fields: tuple[str, ...], optional: int = 0) -> str:
    """ ("lane", "sku", "unit_g", "capacity"), 1 -> "LANE:SKU:UNIT_G[:CAPACITY]" """
    names = [f.upper() for f in fields]
    cut = len(names) - optional
    return ":".join(names[:cut]) + "".join(f"[:{n}]" for n in names[cut:])


def _number(value: object, what: str, kind: type) -> float | int:
    if isinstance(value, bool):
        raise RowError(f"{what}: must be a number (got {value!r})")
    try:
        return kind(value) if isinstance(value, str) else value  # type: ignore[return-value]
    except ValueError:
        raise RowError(f"{what}: must be {'an integer' if kind is int else 'a number'} "
                       f"(got {value!r})") from None


def _by_lane(entries: list[dict], what: str) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for e in entries:
        lane = _number(e.get("lane"), f"{what}: lane", int)
        if not isinstance(lane, int) or lane < 0:
            raise RowError(f"{what}: lane must be 0 or more (got {e.get('lane')!r})")
        if lane in out:
            raise RowError(f"{what}: lane {lane} given twice")
        out[lane] = e
    return out


def build_lanes(count: object, planogram: object, calibration: object,
                defaults: dict) -> tuple[list[dict], set[int]]:
    """config.json lanes from a lane count, a planogram and calibration;
    -> (lanes, the lanes the input calibrated)."""
    if planogram is None:
        raise RowError("planogram: required for a shelf (LANE:SKU:UNIT_G[:CAPACITY];...)")
    plan = _by_lane(_entries(planogram, "planogram", PLANOGRAM_FIELDS, optional=1), "planogram")
    cal = {} if calibration is None else _by_lane(
        _entries(calibration, "calibration", CALIBRATION_FIELDS),
        "calibration")
    if count is None:
        count = max(plan) + 1 if plan else 0
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= fw.MAX_LANES:
        raise RowError(f"lanes: must be 1..{fw.MAX_LANES} (got {count})")
    for what, table in (("planogram", plan), ("calibration", cal)):
        beyond = [i for i in table if i >= count]
        if beyond:
            raise RowError(f"{what}: lane {beyond[0]} is beyond lanes = {count} (0..{count - 1})")
    missing = [str(i) for i in range(count) if i not in plan]
    if missing:
        raise RowError(f"planogram: no entry for lane {', '.join(missing)} (every lane needs "
                       f"LANE:SKU:UNIT_G)")
    lanes = []
    for i in range(count):
        lanes.append(_lane(i, plan[i], cal.get(i), defaults))
    return lanes, set(cal)


def _lane(i: int, plan: dict, cal: dict | None, defaults: dict) -> dict:
    """Lane i of config.json, keys in docs/config.md's order."""
    lane: dict = {"gain": defaults["gain"]} if "gain" in defaults else {}
    if cal is not None:
        lane["offset"] = _number(cal.get("offset"), f"calibration: lane {i} offset", int)
        lane["counts_per_gram"] = _number(cal.get("counts_per_gram"),
                                          f"calibration: lane {i} counts_per_gram", float)
    elif "counts_per_gram" in defaults:
        lane["counts_per_gram"] = defaults["counts_per_gram"]
    else:
        raise RowError(f"calibration: lane {i} has none: give LANE:OFFSET:COUNTS_PER_GRAM, "
                       f"or lane_defaults.counts_per_gram (nominal) in the site")
    lane["sku"] = plan.get("sku")
    lane["unit_g"] = _number(plan.get("unit_g"), f"planogram: lane {i} unit_g", float)
    capacity = plan.get("capacity", defaults.get("capacity"))
    if capacity is not None:
        lane["capacity"] = _number(capacity, f"planogram: lane {i} capacity", int)
    return lane


def row_config(row: dict, defaults: dict) -> tuple[str, dict, set[int] | None]:
    """An inventory row -> (port, its part of config.json, the lanes it calibrated)."""
    refuse_inline_secrets(row)
    row = dict(row)
    port = row.pop("port", None)
    if not isinstance(port, str) or not port:
        raise RowError("port: required (a port path or a USB serial number)")
    part = {k: v for k, v in row.items() if k not in ROW_KEYS}
    if "id" not in row:
        raise RowError("id: required (the device id, a-z 0-9 -)")
    part["device"] = row["id"]
    for key in ("role", "board"):
        if key in row:
            part[key] = row[key]
    calibrated = None
    shelf_keys = [k for k in ("lanes", "planogram", "calibration") if k in row]
    if row.get("role") == "shelf":
        if isinstance(row.get("lanes"), list) and "planogram" not in row:
            part["lanes"] = row["lanes"]  # config.json lanes as they are
        else:
            part["lanes"], calibrated = build_lanes(row.get("lanes"), row.get("planogram"),
                                                    row.get("calibration"), defaults)
    elif shelf_keys:
        raise RowError(f"{shelf_keys[0]}: only for role \"shelf\" (role is "
                       f"{json.dumps(row.get('role'))})")
    return port, part, calibrated


def _expand_device(cfg: dict, device: str) -> None:
    # "{device}" in the site's broker/wifi settings: one pattern for per-device credentials
    for section in SECRET_SECTIONS:
        for key, value in (cfg.get(section) or {}).items():
            if isinstance(value, str):
                cfg[section][key] = value.replace("{device}", device)


def _secret(section: str, table: dict) -> str | None:
    env = table.pop("password_env", None)
    path = table.pop("password_file", None)
    if env is not None and path is not None:
        raise RowError(f"{section}: give password_env or password_file, not both")
    if env is not None:
        if not isinstance(env, str) or not env:
            raise RowError(f"{section}.password_env: must name an environment variable")
        value = os.environ.get(env)
        if value is None:
            raise RowError(f"{section}.password_env: environment variable {env} is not set")
        return value
    if path is not None:
        try:
            text = Path(str(path)).read_text(encoding="utf-8")
        except OSError as exc:
            raise RowError(f"{section}.password_file: cannot read {path} "
                           f"({exc.strerror})") from None
        except UnicodeDecodeError:
            raise RowError(f"{section}.password_file: {path} is not UTF-8 text") from None
        return text[:-1] if text.endswith("\n") else text  # the newline an editor adds
    return None


def _read_ca(path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise RowError(f"broker.ca: cannot read {path} ({exc.strerror})") from None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            ctx.load_verify_locations(cadata=data.decode("ascii"))
        else:
            ctx.load_verify_locations(cadata=data)  # DER
    except (ssl.SSLError, ValueError, UnicodeDecodeError):
        raise RowError(f"broker.ca: {path} is not a PEM or DER certificate") from None
    return data


def board_definition(name: str) -> tuple[bytes, dict]:
    path = BOARDS_DIR / f"{name}.json"
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9-]+", name) or not path.exists():
        have = ", ".join(sorted(p.stem for p in BOARDS_DIR.glob("*.json")))
        raise RowError(f"board: no board definition {name!r} in boards/ (have: {have})")
    raw = path.read_bytes()
    board, errors, _ = fw.check_board(json.loads(raw))
    if errors:
        raise RowError(f"board: boards/{name}.json: {errors[0]}")
    return raw, board


def _scrub_schema_error(line: str, secrets: list[str]) -> str:
    # the schema shows a bad value after "(got": never for a password
    if line.startswith(("wifi.password", "broker.password")):
        line = line.split(" (got ")[0]
    return scrub(line, secrets)


def _client_certs_refused(broker: dict) -> None:
    for key in CLIENT_CERT_KEYS:
        if key in broker:
            raise RowError(f"broker.{key}: the firmware cannot use a client certificate (its "
                           f"config.json has no key for one): log in with broker.username "
                           f"and password_env/password_file")


def _ca_files(broker: dict) -> tuple[dict[str, bytes], str | None]:
    """broker.ca (a file here) -> ({board path: the certificate}, its path here); sets
    broker.ca_file, where config.json finds it on the board."""
    ca_path = broker.pop("ca", None)
    tls = str(broker.get("url", "")).startswith("mqtts://")
    if ca_path is None:
        if tls and "ca_file" not in broker:
            raise RowError("broker.ca: required for mqtts:// (the broker's CA certificate on "
                           "this computer; provision copies it to the board)")
        return {}, None
    if not tls:
        raise RowError("broker.ca: given, but broker.url is plain mqtt://: use mqtts:// or "
                       "drop broker.ca")
    broker.setdefault("ca_file", CA_FILE)
    return {"/" + str(broker["ca_file"]).lstrip("/"): _read_ca(str(ca_path))}, str(ca_path)


def finish(port: str, cfg: dict, board_override: str | None,
           calibrated: set[int] | None) -> DevicePlan:
    """Secrets, CA and board definition in; validated with the firmware's schema. Every
    problem of the device at once: RowError with one line per problem."""
    cfg = copy.deepcopy(cfg)
    cfg.pop("lane_defaults", None)
    if board_override:
        cfg["board"] = board_override
    device = cfg.get("device")
    _expand_device(cfg, device if isinstance(device, str) else "")
    problems: list[str] = []

    def attempt(fn, *args):  # -> fn's result, or None with the problem noted
        try:
            return fn(*args)
        except RowError as exc:
            problems.append(str(exc))
            return None

    secrets = []
    for section in SECRET_SECTIONS:
        table = cfg.get(section)
        if isinstance(table, dict):
            value = attempt(_secret, section, table)
            if value is not None:
                table["password"] = value
                secrets.append(value)
    broker = cfg.get("broker") if isinstance(cfg.get("broker"), dict) else {}
    attempt(_client_certs_refused, broker)
    files, ca_path = attempt(_ca_files, broker) or ({}, None)
    if "board" not in cfg:
        problems.append("board: not set (--board NAME, or board = \"NAME\" in the site or row)")
    definition = attempt(board_definition, cfg["board"]) if "board" in cfg else None
    board = definition[1] if definition else None
    _, errors, _ = fw.check_config(cfg, board)
    problems += [_scrub_schema_error(e, secrets) for e in errors]
    if problems or definition is None:
        raise RowError("\n".join(problems))
    cfg = {**{k: cfg[k] for k in KEY_ORDER if k in cfg}, **cfg}
    return DevicePlan("", port, cfg, cfg["board"], definition[0], board["chip"], files,
                      secrets, calibrated, ca_path)


# ---- what the board already has ------------------------------------------------------------

def with_board_calibration(plan: DevicePlan, on_board: object) -> tuple[dict, list[int]]:
    """plan.config, with the calibration (offset, counts per gram, gain) of the lanes the
    input left uncalibrated taken from the config.json the board has for the same device: a
    re-provisioned shelf keeps what the technician calibrated. -> (config, lanes kept)."""
    cfg = plan.config
    if (plan.calibrated is None or not isinstance(on_board, dict) or "lanes" not in cfg
            or on_board.get("device") != plan.device
            or not isinstance(on_board.get("lanes"), list)):
        return cfg, []
    merged = copy.deepcopy(cfg)
    kept = []
    for i, lane in enumerate(merged["lanes"]):
        old = on_board["lanes"][i] if i < len(on_board["lanes"]) else None
        if i in plan.calibrated or not isinstance(old, dict) or "counts_per_gram" not in old:
            continue
        for key in ("offset", "counts_per_gram", "gain"):
            if key in old:
                lane[key] = old[key]
        kept.append(i)
    if kept and fw.check_config(merged, board_definition(plan.board_name)[1])[1]:
        return cfg, []  # what the board had does not fit the new config: start afresh
    return merged, kept
