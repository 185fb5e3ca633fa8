"""A real mosquitto for the broker tests, and a mosquitto_sub observer.

`Broker(workdir, users=..., certs=...)` runs /usr/sbin/mosquitto (Debian's 2.0.x; `make setup`
installs it) on 127.0.0.1 and a free port of its own, with its config, password file,
persistence and log under `workdir`. start() / stop() / restart() keep that port, and with
persistence on a clean_session=False session (subscriptions, queued QoS 1 messages) survives a
restart. pause() / resume() freeze the process (SIGSTOP / SIGCONT): a broker that accepts TCP
but never answers. `url` is mqtt://127.0.0.1:<port> (mqtts:// with certs), `cafile` the CA.

Fixtures:
    broker        anonymous plain listener, started
    auth_broker   users AUTH_USERS, anonymous refused, started
    tls_broker    TLS listener with a server certificate for 127.0.0.1 / localhost, started
    make_broker   factory: make_broker(users=..., certs=..., start=True) -> Broker
    certs         the session's Certs (CA, server cert and key, and an unrelated CA)
Every broker made by these fixtures is stopped at teardown.

`Subscriber(broker, topic, ...)` runs mosquitto_sub and collects what it receives, as
Message(topic, payload, retain), in `messages`; start() returns once it is subscribed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
HOST = "127.0.0.1"
AUTH_USERS = {"shelf-7": "correct horse", "ops": "battery staple"}


def tool(name: str) -> str:
    """Path of a command-line tool the broker tests need; skip the test when it is missing."""
    found = MOSQUITTO if name == "mosquitto" else shutil.which(name)
    if not found or not os.access(found, os.X_OK):
        pytest.skip(f"{name} not found: the broker tests need Debian's mosquitto, "
                    f"mosquitto-clients and openssl (`make setup` installs them)")
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


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` from asyncio code until it holds; fail saying `what` after timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)


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


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    tool("openssl")
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    tool("mosquitto")
    made: list[Broker] = []

    def make(*, users: dict[str, str] | None = None, certs: Certs | None = None,
             anonymous: bool | None = None, start: bool = True) -> Broker:
        b = Broker(tmp_path / f"broker-{len(made)}", users=users, certs=certs,
                   anonymous=anonymous)
        made.append(b)
        if start:
            b.start()
        return b

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def broker(make_broker: Callable[..., Broker]) -> Broker:
    return make_broker()


@pytest.fixture
def auth_broker(make_broker: Callable[..., Broker]) -> Broker:
    return make_broker(users=AUTH_USERS)


@pytest.fixture
def tls_broker(make_broker: Callable[..., Broker], certs: Certs) -> Broker:
    return make_broker(certs=certs)


# ---- an observer ------------------------------------------------------------------------


class Message(NamedTuple):
    topic: str
    payload: str
    retain: bool


class Subscriber:
    """mosquitto_sub on one topic filter; `messages` fills as they arrive (thread-safe)."""

    MARK = "MSG|"

    def __init__(self, broker: Broker, topic: str, *, qos: int = 1,
                 client_id: str | None = None, persistent: bool = False) -> None:
        self.broker = broker
        self.topic = topic
        self.qos = qos
        self.client_id = client_id
        self.persistent = persistent  # clean_session=False: the broker queues while it is away
        self.messages: list[Message] = []
        self.subacks = 0
        self.proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None

    def _command(self) -> list[str]:
        b = self.broker
        # stdbuf: mosquitto_sub flushes its stdout per message, but not its debug lines,
        # and the SUBACK line is how start() knows it is subscribed.
        cmd = [tool("stdbuf"), "-oL", tool("mosquitto_sub"), "-h", b.host, "-p", str(b.port),
               "-t", self.topic, "-q", str(self.qos), "-d", "-F", self.MARK + "%r|%t|%p"]
        if self.client_id:
            cmd += ["-i", self.client_id]
        if self.persistent:
            cmd.append("-c")
        if b.certs:
            cmd += ["--cafile", str(b.certs.ca)]
        if b.users:
            user, password = next(iter(b.users.items()))
            cmd += ["-u", user, "-P", password]
        return cmd

    def start(self, timeout: float = 10.0) -> Subscriber:
        self.proc = subprocess.Popen(self._command(), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not self.subacks:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mosquitto_sub did not subscribe to {self.topic}")
            time.sleep(0.01)
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            with self._lock:
                if line.startswith(self.MARK):
                    retain, topic, payload = line[len(self.MARK):].split("|", 2)
                    self.messages.append(Message(topic, payload, retain == "1"))
                elif "received SUBACK" in line:
                    self.subacks += 1

    def payloads(self) -> list[str]:
        with self._lock:
            return [m.payload for m in self.messages]

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._reader is not None:
            self._reader.join(2)
        if proc.stdout:
            proc.stdout.close()


@pytest.fixture
def subscribers() -> Iterator[Callable[..., Subscriber]]:
    """subscribers(broker, topic, **options) -> a started Subscriber, stopped at teardown."""
    made: list[Subscriber] = []

    def make(broker: Broker, topic: str, *, qos: int = 1, client_id: str | None = None,
             persistent: bool = False) -> Subscriber:
        s = Subscriber(broker, topic, qos=qos, client_id=client_id, persistent=persistent)
        made.append(s)
        return s.start()

    yield make
    for s in made:
        s.stop()
