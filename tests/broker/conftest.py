"""A real mosquitto for the broker tests (host_tools.mosquitto.Broker), and a mosquitto_sub
observer. A missing mosquitto, mosquitto_sub or openssl skips the test, saying so.

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
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from host_tools import mosquitto
from host_tools.mosquitto import Broker, Certs, make_certs

AUTH_USERS = {"shelf-7": "correct horse", "ops": "battery staple"}
__all__ = ["AUTH_USERS", "Broker", "Certs", "Message", "Subscriber", "tool", "wait_until"]


def tool(name: str) -> str:
    """Path of a command-line tool the broker tests need; skip the test when it is missing."""
    try:
        return mosquitto.tool(name)
    except mosquitto.ToolMissing as exc:
        pytest.skip(str(exc))


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` from asyncio code until it holds; fail saying `what` after timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)


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
