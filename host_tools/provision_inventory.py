"""Reading what `shelfctl provision` is given: a site file (shared settings: store, WiFi,
broker, CA), an inventory (CSV or TOML, one device a row) or one device's config (JSON or
TOML). Every device becomes a DevicePlan (host_tools.provision_config); every bad row is
reported with its file and line, e.g. `inventory.csv:7: lanes: must be 1..8 (got 12)`, all
of them before any board is touched. docs/provisioning.md describes the formats.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from host_tools.errors import UserError
from host_tools.provision_config import (
    DevicePlan,
    RowError,
    finish,
    merge,
    refuse_inline_secrets,
    row_config,
)

MAX_ERRORS = 20
PATH_KEYS = (("broker", "ca"), ("broker", "password_file"), ("wifi", "password_file"))
LANE_DEFAULT_KEYS = ("gain", "counts_per_gram", "capacity")

# CSV column -> (dotted key in a device row, converter)
CSV_COLUMNS = {
    "port": ("port", str), "id": ("id", str), "role": ("role", str), "board": ("board", str),
    "lanes": ("lanes", int), "planogram": ("planogram", str),
    "calibration": ("calibration", str), "sps": ("sps", int),
    "telemetry_s": ("telemetry_s", int), "exit": ("gate.exit", str),
    "mqtt_username": ("broker.username", str),
    "mqtt_password_env": ("broker.password_env", str),
    "mqtt_password_file": ("broker.password_file", str),
}
REQUIRED_COLUMNS = ("port", "id", "role")


# ---- reading files -------------------------------------------------------------------------

def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: must hold a JSON object")
    return data


def _absolute_paths(table: dict, base: Path) -> None:
    # file names in a file are relative to that file, wherever shelfctl runs
    for section, key in PATH_KEYS:
        value = table.get(section, {}).get(key) if isinstance(table.get(section), dict) else None
        if isinstance(value, str) and value:
            table[section][key] = str(base / value)


def read_site(path: Path) -> dict:
    """A site file (TOML): the settings every device shares."""
    site = _read_toml(path)
    _check_site(site, str(path))
    _absolute_paths(site, path.parent)
    return site


def _check_site(site: dict, where: str) -> None:
    for key in ("device", "id", "port", "role", "lanes", "planogram", "calibration"):
        if key in site:
            raise UserError(f"{where}: {key}: belongs to a device, not to the site")
    defaults = site.get("lane_defaults", {})
    if not isinstance(defaults, dict):
        raise UserError(f"{where}: lane_defaults: must be a table")
    for key in defaults:
        if key not in LANE_DEFAULT_KEYS:
            raise UserError(f"{where}: lane_defaults.{key}: unknown key (have: "
                            f"{', '.join(LANE_DEFAULT_KEYS)})")
    try:
        refuse_inline_secrets(site)
    except RowError as exc:
        raise UserError(f"{where}: {exc}") from None


def _toml_device_lines(text: str) -> list[int]:
    # tomllib gives no positions: the n-th [[device]] header is the n-th device
    return [i + 1 for i, line in enumerate(text.splitlines())
            if re.match(r"\s*\[\[\s*device\s*\]\]", line)]


def read_inventory(path: Path) -> tuple[dict, list[tuple[str, dict]]]:
    """(site settings found in the inventory, [(where, device row)]); CSV or TOML."""
    if path.suffix.lower() == ".csv":
        return {}, _read_csv(path)
    if path.suffix.lower() != ".toml":
        raise UserError(f"{path}: an inventory is a .csv or a .toml file")
    data = _read_toml(path)
    devices = data.pop("device", None)
    if not isinstance(devices, list) or not devices:
        raise UserError(f"{path}: no devices: add one [[device]] table per device")
    _check_site(data, str(path))
    _absolute_paths(data, path.parent)
    lines = _toml_device_lines(path.read_text(encoding="utf-8"))
    rows = []
    for i, row in enumerate(devices):
        where = f"{path}:{lines[i]}" if len(lines) == len(devices) else f"{path}: device {i + 1}"
        if isinstance(row, dict):
            _absolute_paths(row, path.parent)
        rows.append((where, row))
    return data, rows


def _read_csv(path: Path) -> list[tuple[str, dict]]:
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM from a spreadsheet is fine
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows = []
    for cells in reader:
        if not cells or all(not c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
            continue
        where = f"{path}:{reader.line_num}"
        if header is None:
            header = [c.strip() for c in cells]
            _check_header(header, where)
            continue
        if len(cells) > len(header):
            raise UserError(f"{where}: {len(cells)} cells, but the header has {len(header)} "
                            f"columns (a comma inside a cell needs \"quotes\")")
        rows.append((where, _csv_row(dict(zip(header, (c.strip() for c in cells))),
                                     path.parent)))
    if header is None:
        raise UserError(f"{path}: empty: the first row names the columns "
                        f"({', '.join(CSV_COLUMNS)})")
    return rows


def _check_header(header: list[str], where: str) -> None:
    for name in header:
        if "password" in name and name not in CSV_COLUMNS:
            raise UserError(f"{where}: column {name!r}: a secret is not accepted in the file: "
                            f"use mqtt_password_env or mqtt_password_file")
        if name not in CSV_COLUMNS:
            raise UserError(f"{where}: unknown column {name!r} (columns: "
                            f"{', '.join(CSV_COLUMNS)})")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise UserError(f"{where}: missing column(s): {', '.join(missing)}")


def _csv_row(cells: dict[str, str], base: Path) -> dict:
    row: dict = {}
    for name, text in cells.items():
        if not text:
            continue  # an empty cell: not given
        key, convert = CSV_COLUMNS[name]
        try:
            value: object = convert(text)
        except ValueError:
            value = text  # not a number: the row's checks say so, with the others
        if key == "broker.password_file":
            value = str(base / value)
        head, _, tail = key.partition(".")
        if tail:
            row.setdefault(head, {})[tail] = value
        else:
            row[key] = value
    return row


# ---- the two ways in ----------------------------------------------------------------------

def _collect(jobs: list[tuple[str, Callable[[], DevicePlan]]]) -> list[DevicePlan]:
    """Run each (where, thunk -> DevicePlan); every error as `where: message`, all at once."""
    plans, errors = [], []
    for where, build in jobs:
        try:
            plan = build()
            plan.where = where
            plans.append(plan)
        except RowError as exc:
            errors += [f"{where}: {line}" for line in str(exc).splitlines()]
    if errors:
        more = len(errors) - MAX_ERRORS
        raise UserError("\n".join(errors[:MAX_ERRORS])
                        + (f"\n({more} more errors not shown)" if more > 0 else ""))
    return plans


def _check_unique(plans: list[DevicePlan]) -> None:
    seen_id: dict[str, str] = {}
    seen_port: dict[str, str] = {}
    for p in plans:
        if p.device in seen_id:
            raise UserError(f"{p.where}: id: {p.device} is already on {seen_id[p.device]}")
        if p.port in seen_port:
            raise UserError(f"{p.where}: port: {p.port} is already on {seen_port[p.port]}")
        seen_id[p.device] = seen_port[p.port] = p.where


def plan_inventory(path: Path, site_path: Path | None = None,
                   board: str | None = None) -> list[DevicePlan]:
    site = read_site(site_path) if site_path else {}
    inline_site, rows = read_inventory(path)
    site = merge(site, inline_site)
    defaults = site.pop("lane_defaults", {})

    def job(row: object) -> Callable[[], DevicePlan]:
        def build() -> DevicePlan:
            if not isinstance(row, dict):
                raise RowError("must be a table")
            port, part, calibrated = row_config(row, defaults)
            return finish(port, merge(site, part), board, calibrated)
        return build

    if not rows:
        raise UserError(f"{path}: no devices")
    plans = _collect([(where, job(row)) for where, row in rows])
    _check_unique(plans)
    return plans


def plan_config(path: Path, port: str, site_path: Path | None = None,
                board: str | None = None) -> DevicePlan:
    """One device from a config.json-shaped file (JSON or TOML), secrets by reference."""
    site = read_site(site_path) if site_path else {}
    site.pop("lane_defaults", None)
    data = _read_toml(path) if path.suffix.lower() == ".toml" else _read_json(path)
    _absolute_paths(data, path.parent)

    def build() -> DevicePlan:
        refuse_inline_secrets(data)
        return finish(port, merge(site, data), board, None)

    return _collect([(str(path), build)])[0]


