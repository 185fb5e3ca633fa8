"""A real mosquitto on a loopback port, for the tests, `make bench` and the demo.

`Broker(workdir, users=..., certs=...)` runs /usr/sbin/mosquitto (Debian's 2.0.x; `make setup`
installs it) on 127.0.0.1 and a free port of its own, with its config, password file,
persistence and log under `workdir`. start() / stop() / restart() keep that port, and with
persistence on a clean_session=False session (subscriptions, queued QoS 1 messages) survives a
restart. pause() / resume() freeze the process (SIGSTOP / SIGCONT): a broker that accepts TCP
but never answers. `url` is mqtt://127.0.0.1:<port> (mqtts:// with certs), `cafile` the CA.
`make_certs(dir)` makes a CA and a server certificate for 127.0.0.1 / localhost with openssl.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
HOST = "127.0.0.1"


class ToolMissing(RuntimeError):
    """A command-line tool the broker needs is not installed."""


def tool(name: str) -> str:
    """Path of a command-line tool (mosquitto, mosquitto_passwd, openssl...); ToolMissing."""
    found = MOSQUITTO if name == "mosquitto" else shutil.which(name)
    if not found or not os.access(found, os.X_OK):
        raise ToolMissing(f"{name} not found: Debian's mosquitto, mosquitto-clients and "
                          f"openssl are needed (`make setup` installs them)")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


# ---- certificates ----------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    ca: Path  # the CA that signed the server certificate
    server_cert: Path
    server_key: Path
    other_ca: Path  # a CA that signed nothing here: verification against it must fail


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run([tool("openssl"), *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{proc.stderr}")


def _make_ca(d: Path, name: str, cn: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "3",
             "-subj", f"/CN={cn}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def make_certs(d: Path) -> Certs:
    """A CA, a server certificate it signed for 127.0.0.1 and localhost, and another CA."""
    d.mkdir(parents=True, exist_ok=True)
    _make_ca(d, "ca", "shelfctl test CA")
    _make_ca(d, "other-ca", "some other CA")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "server.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-set_serial", "2", "-days", "3", "-extfile", "server.ext", "-out", "server.crt",
             cwd=d)
    return Certs(d / "ca.crt", d / "server.crt", d / "server.key", d / "other-ca.crt")


# ---- the broker --------------------------------------------------------------------------


class Broker:
    host = HOST

    def __init__(self, workdir: Path, *, users: dict[str, str] | None = None,
                 certs: Certs | None = None, anonymous: bool | None = None) -> None:
        self.workdir = workdir
        self.users = users
        self.certs = certs
        self.anonymous = (users is None) if anonymous is None else anonymous
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "data").mkdir(exist_ok=True)
        self.log_path = workdir / "mosquitto.log"
        self.config_path = workdir / "mosquitto.conf"
        self.config_path.write_text(self._config())

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.certs else 'mqtt'}://{self.host}:{self.port}"

    @property
    def cafile(self) -> str | None:
        return str(self.certs.ca) if self.certs else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _config(self) -> str:
        lines = ["per_listener_settings false"]
        if os.geteuid() == 0:
            lines.append("user root")  # else mosquitto drops to a user that cannot read here
        lines.append(f"listener {self.port} {self.host}")
        if self.certs:
            lines += [f"cafile {self.certs.ca}", f"certfile {self.certs.server_cert}",
                      f"keyfile {self.certs.server_key}", "require_certificate false"]
        lines.append(f"allow_anonymous {'true' if self.anonymous else 'false'}")
        if self.users:
            lines.append(f"password_file {self._password_file()}")
        lines += [
            "persistence true",
            f"persistence_location {self.workdir / 'data'}/",
            f"log_dest file {self.log_path}",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "connection_messages true",
        ]
        return "\n".join(lines) + "\n"

    def _password_file(self) -> Path:
        path = self.workdir / "passwords"
        passwd = tool("mosquitto_passwd")
        for i, (user, password) in enumerate((self.users or {}).items()):
            create = ["-c"] if i == 0 else []
            subprocess.run([passwd, *create, "-b", str(path), user, password], check=True,
                           capture_output=True)
        path.chmod(0o600)
        return path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 10.0) -> None:
        """Start mosquitto and return once its port accepts connections."""
        if self.running:
            return
        stderr_path = self.workdir / "stderr.txt"
        with stderr_path.open("ab") as stderr:
            self.proc = subprocess.Popen([tool("mosquitto"), "-c", str(self.config_path)],
                                         stdout=subprocess.DEVNULL, stderr=stderr)
        self.starts += 1
        deadline = time.monotonic() + timeout
        while not port_open(self.host, self.port):
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"mosquitto exited at start:\n"
                                   f"{stderr_path.read_text(errors='replace')}\n"
                                   f"{self.log_text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mosquitto did not open port {self.port}:\n"
                                   f"{self.log_text()}")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop mosquitto (SIGTERM: it saves its persistence file and closes every client)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # in case it was paused
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        if down_s:
            time.sleep(down_s)
        self.start()

    def pause(self) -> None:
        """Freeze the broker: connections stay open, nothing is answered."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
