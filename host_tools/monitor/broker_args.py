"""The broker options `monitor` and `replay` share, and connecting with one-line errors.

The password comes from --password-file (its first line) or the SHELFCTL_MQTT_PASSWORD
environment variable, never from the command line (other users see it in `ps`), and is never
printed.
"""

from __future__ import annotations

import argparse
import os
import secrets
from pathlib import Path

from host_tools.errors import UserError
from host_tools.mqtt_client import Client, MQTTError, parse_url

PASSWORD_ENV = "SHELFCTL_MQTT_PASSWORD"


def add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", required=True, metavar="URL",
                        help="mqtt://host[:port] or mqtts://host[:port] (TLS)")
    add_credential_arguments(parser)


def add_credential_arguments(parser: argparse.ArgumentParser) -> None:
    """--user, --password-file, --cafile: for a verb that declares --broker itself."""
    parser.add_argument("--user", metavar="NAME", help="MQTT user name")
    parser.add_argument("--password-file", metavar="FILE",
                        help=f"the password: the file's first line (else ${PASSWORD_ENV}, "
                             f"if set, with --user)")
    parser.add_argument("--cafile", metavar="FILE",
                        help="CA certificate that signed an mqtts:// broker's certificate "
                             "(default: the system's CAs)")


def _password(args: argparse.Namespace) -> str | None:
    if args.password_file:
        if not args.user:
            raise UserError("--password-file needs --user (MQTT sends no password alone)")
        try:
            lines = Path(args.password_file).read_text().splitlines()
        except OSError as e:
            raise UserError(f"cannot read --password-file {args.password_file}: "
                            f"{e.strerror}") from None
        return lines[0] if lines else ""
    return os.environ.get(PASSWORD_ENV) if args.user else None


def make_client(args: argparse.Namespace, role: str, *, session: str | None = None,
                keepalive: int = 30) -> Client:
    """A Client from the shared options; session: a persistent session's client id."""
    try:
        _, _, tls = parse_url(args.broker)
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.cafile and not tls:
        raise UserError("--cafile is for an mqtts:// broker URL")
    if args.cafile and not Path(args.cafile).is_file():
        raise UserError(f"--cafile {args.cafile}: no such file")
    client_id = session or f"shelfctl-{role}-{os.getpid()}-{secrets.token_hex(3)}"
    return Client(args.broker, client_id, username=args.user, password=_password(args),
                  cafile=args.cafile, keepalive=keepalive, clean_session=session is None)


def connect(client: Client) -> bool:
    """Connect, or a UserError naming the broker and the reason in one line."""
    try:
        return client.connect()
    except MQTTError as e:
        raise UserError(f"broker {client.url}: {e}") from None
