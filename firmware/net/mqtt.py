"""The shelf controller's asyncio MQTT 3.1.1 client.

- QoS 0 and QoS 1 publishing. Up to `window` QoS 1 publishes are in flight at once; each
  stays in memory until its PUBACK, when `on_puback(pid, ref)` is called (`ref` is whatever the
  caller passed to publish(), e.g. an outbox record id, so it never has to race the PUBACK to
  map pid -> record). publish() waits while the window is full, also while disconnected.
- Unacknowledged QoS 1 publishes are sent again after a reconnect, in their order, with the
  same packet id and DUP=1. clean_session=False by default, so the broker keeps the session
  (subscriptions, and messages for us while we are away).
- subscribe(): sent now, and again after any reconnect where the broker has no session.
  Incoming messages go to `on_message(topic, payload, retain)`.
- Keepalive: a PINGREQ when we have sent nothing for half the keepalive or received nothing
  for a whole one; nothing received within ping_timeout_ms after it (or the PINGREQ stuck
  behind a write that does not finish) means the connection is dead.
- Reconnection by itself, after a jittered exponential backoff (see backoff_delay_ms).
- Last will at CONNECT; `on_connect(session_present)` (may be async) after every successful
  (re)connect, for the retained `online` status and any other resubscription.
- `connected` is an asyncio.Event, set while a connection is up.

    client = MQTTClient(Transport.from_url(url, cafile="ca.pem"), "shelf-12",
                        will_topic="store/shelf-12/status", will_payload=b"offline",
                        on_message=on_cmd, on_puback=outbox.acked, on_connect=announce)
    client.start()           # or `await client.connect()` to see why a first attempt fails
    await client.subscribe("store/shelf-12/cmd", 1)
    await client.publish("store/shelf-12/events", data, qos=1, ref=record_id)
    await client.stop()      # DISCONNECT; stop(disconnect=False) drops it like a crash

The transport is anything with `async open()` -> (reader, writer) (see net.transport), or an
async callable returning that pair.
"""

import asyncio
import random
import time

from micropython import const

from net.mqtt_wire import (
    CONNACK,
    DEFAULT_MAX_PACKET,
    DISCONNECT_PACKET,
    PINGREQ_PACKET,
    PINGRESP,
    PUBACK,
    PUBLISH,
    SUBACK,
    SUBACK_FAILURE,
    UNSUBACK,
    Decoder,
    ProtocolError,
    check_topic_filter,
    connack_reason,
    connect_packet,
    next_packet_id,
    puback_packet,
    publish_packet,
    set_dup,
    subscribe_packet,
    unsubscribe_packet,
)
from net.transport import close_stream

# CPython has no ticks_ms (unless host_tools.firmware put one on `time`).
_monotonic = getattr(time, "monotonic", time.time)


class _HostClock:
    """time.ticks_ms / ticks_diff for CPython (host tests): monotonic, never wrapping."""

    @staticmethod
    def ticks_ms():
        return int(_monotonic() * 1000)

    @staticmethod
    def ticks_diff(a, b):
        return a - b


_clock = time if hasattr(time, "ticks_ms") else _HostClock


def ticks_ms():
    return _clock.ticks_ms()


def ticks_diff(a, b):
    return _clock.ticks_diff(a, b)


_RX_CHUNK = const(512)  # bytes asked of the stream per read
_STABLE_MS = const(30000)  # a connection that lived this long resets the backoff


class ConnectRefused(Exception):
    """The broker answered CONNECT with a non-zero return code (`code`, `reason`)."""

    def __init__(self, code):
        super().__init__("connection refused: %s (CONNACK return code %d)"
                         % (connack_reason(code), code))
        self.code = code
        self.reason = connack_reason(code)


class NotConnected(Exception):
    """A QoS 0 publish (or unsubscribe) found no connection."""


class ConnectionLost(Exception):
    """The broker closed the connection or stopped answering."""


class SubscribeFailed(Exception):
    """The broker refused a subscription (SUBACK 0x80)."""


def backoff_delay_ms(attempt, base_ms, cap_ms, rand16):
    """Milliseconds to wait before retry number `attempt` (1, 2, ...): base_ms doubled per
    attempt up to cap_ms, of which a random part up to half is taken off (rand16: 0..65535),
    so that a store full of shelves does not reconnect in step after a broker restart."""
    delay = base_ms
    while attempt > 1 and delay < cap_ms:
        delay *= 2
        attempt -= 1
    if delay > cap_ms:
        delay = cap_ms
    half = delay // 2
    return half + (((delay - half) * rand16) >> 16)


async def _sleep_ms(ms):
    await asyncio.sleep(ms / 1000)


class _Conn:
    """One connection to the broker and its per-connection state."""

    def __init__(self, reader, writer, max_packet):
        self.reader = reader
        self.writer = writer
        self.decoder = Decoder(max_packet)
        self.dead = asyncio.Event()
        self.tasks = []
        self.graceful = False  # DISCONNECT was sent: let the stream flush when closing
        self.ended = False
        now = ticks_ms()
        self.last_rx = now
        self.last_tx = now
        self.ping_at = None  # ticks of the unanswered PINGREQ


class _Request:
    """A SUBSCRIBE or UNSUBSCRIBE waiting for its SUBACK / UNSUBACK."""

    def __init__(self, topics):
        self.topics = topics  # [(filter, qos)] (qos None for UNSUBSCRIBE)
        self.done = asyncio.Event()
        self.answer = None  # the Suback / Ack; stays None when the connection is lost


class MQTTClient:
    def __init__(self, transport, client_id, keepalive=60, clean_session=False,
                 username=None, password=None, will_topic=None, will_payload=b"",
                 will_qos=1, will_retain=True, window=8, max_packet=DEFAULT_MAX_PACKET,
                 on_message=None, on_puback=None, on_connect=None, on_disconnect=None,
                 backoff_ms=1000, backoff_max_ms=60000, ping_timeout_ms=0,
                 connect_timeout_ms=10000):
        """keepalive in seconds (0: none); window: QoS 1 publishes in flight at most;
        ping_timeout_ms: how long a PINGREQ may go unanswered (0: the keepalive, at most 10 s);
        connect_timeout_ms: for the stream to open and the CONNACK to arrive.
        Callbacks: on_message(topic, payload, retain), on_puback(pid, ref),
        on_connect(session_present) (may be a coroutine function), on_disconnect(error)."""
        if window < 1:
            raise ValueError("window must be at least 1")
        self._open = transport.open if hasattr(transport, "open") else transport
        self.client_id = client_id
        self.keepalive = keepalive
        self.window = window
        self.max_packet = max_packet
        self.on_message = on_message
        self.on_puback = on_puback
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.backoff_ms = backoff_ms
        self.backoff_max_ms = backoff_max_ms
        self.ping_timeout_ms = ping_timeout_ms or min(keepalive * 1000, 10000)
        self.connect_timeout_ms = connect_timeout_ms
        # CONNECT never changes: encode it once (this also checks the arguments now).
        self._connect_packet = connect_packet(
            client_id, keepalive, clean_session, will_topic, will_payload, will_qos,
            will_retain, username, password)
        self.connected = asyncio.Event()
        self.session_present = False
        self.last_error = None  # why the last connection attempt failed or ended
        self.callback_error = None  # the last exception a callback raised (it is not fatal)
        self.connects = 0  # successful connects so far
        self.pings = 0  # PINGRESPs received
        self._conn = None
        self._task = None
        self._wlock = asyncio.Lock()  # one packet on the wire at a time
        self._pid = 0
        self._inflight = {}  # pid -> [packet, ref, sent before]
        self._order = []  # in-flight pids, oldest first (dicts are unordered on MicroPython)
        self._slot = asyncio.Event()  # set whenever an in-flight publish is acknowledged
        self._requests = {}  # pid -> _Request
        self._subs = {}  # filter -> qos, all subscriptions
        self._unconfirmed = set()  # filters without a SUBACK yet

    # ---- status ----------------------------------------------------------------------

    @property
    def is_connected(self):
        return self.connected.is_set()

    @property
    def inflight(self):
        """QoS 1 publishes not acknowledged yet."""
        return len(self._inflight)

    # ---- lifecycle -------------------------------------------------------------------

    def start(self):
        """Connect in the background, retrying with backoff, and stay connected until stop().
        Needs a running event loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(None))

    async def connect(self):
        """Connect now, raising what stopped the first attempt (OSError, TLS errors,
        ConnectRefused, ...); once connected, behave as after start()."""
        if self._task is not None:
            raise RuntimeError("the client is already running")
        conn, present = await self._open_session()
        try:
            await self._begin(conn, present)
        except BaseException:
            await self._end(conn)
            raise
        self._task = asyncio.create_task(self._run(conn))

    async def stop(self, disconnect=True):
        """Stop for good. disconnect=True sends DISCONNECT first, so the broker discards the
        will; disconnect=False just drops the connection, as a crash would, so the broker
        publishes the will. Unacknowledged publishes stay queued (a later start() resends)."""
        task = self._task
        self._task = None
        conn = self._conn
        if conn is not None and disconnect:
            self.connected.clear()
            async with self._wlock:
                conn.graceful = await self._write_locked(conn, DISCONNECT_PACKET)
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if conn is not None:
            await self._end(conn)

    # ---- publishing and subscribing ------------------------------------------------------

    async def publish(self, topic, payload, qos=0, retain=False, ref=None):
        """Publish; returns the packet id (0 for QoS 0).

        QoS 0 is sent now or raises NotConnected. QoS 1 waits for a free slot in the window,
        is sent now when connected (else at the next connect) and is repeated after every
        reconnect until its PUBACK, which calls on_puback(pid, ref)."""
        if qos == 0:
            if not await self._send(publish_packet(topic, payload, 0, retain)):
                raise NotConnected("not connected: QoS 0 message to %s dropped" % topic)
            return 0
        if qos != 1:
            raise ValueError("qos must be 0 or 1")
        while len(self._inflight) >= self.window:
            self._slot.clear()
            await self._slot.wait()
        pid = self._new_pid()
        entry = [publish_packet(topic, payload, 1, retain, False, pid), ref, False]
        self._inflight[pid] = entry
        self._order.append(pid)
        async with self._wlock:
            # A reconnect may have sent it while we waited for the lock.
            conn = self._conn
            if conn is not None and not entry[2] and self._inflight.get(pid) is entry:
                entry[2] = True
                await self._write_locked(conn, entry[0])
        return pid

    async def wait_all_acked(self):
        """Until every QoS 1 publish made so far is acknowledged."""
        while self._inflight:
            self._slot.clear()
            await self._slot.wait()

    async def subscribe(self, topic, qos=1):
        """Subscribe to a topic filter at QoS 0 or 1, now and after any reconnect where the
        broker lost the session. Returns the granted QoS, or None when not connected (it is
        sent at the next connect). Raises SubscribeFailed when the broker refuses it."""
        check_topic_filter(topic)
        if qos != 0 and qos != 1:
            raise ValueError("subscribe at QoS 0 or 1")
        self._subs[topic] = qos
        self._unconfirmed.add(topic)
        req = await self._request([(topic, qos)])
        if req is None:
            return None
        await req.done.wait()
        if req.answer is None:
            return None  # connection lost first: sent again at the next connect
        code = req.answer.granted[0]
        if code == SUBACK_FAILURE:
            raise SubscribeFailed("the broker refused the subscription to %s" % topic)
        return code

    async def unsubscribe(self, topic):
        """Forget a subscription. Returns True once the broker confirmed it; raises
        NotConnected when not connected (a persistent session keeps it on the broker)."""
        self._subs.pop(topic, None)
        self._unconfirmed.discard(topic)
        req = await self._request([(topic, None)])
        if req is None:
            raise NotConnected("not connected: cannot unsubscribe from %s" % topic)
        await req.done.wait()
        return req.answer is not None

    async def _request(self, topics):
        # Send a SUBSCRIBE (qos given) or UNSUBSCRIBE; None when there is no connection.
        if self._conn is None:
            return None
        pid = self._new_pid()
        if topics[0][1] is None:
            packet = unsubscribe_packet(pid, [t[0] for t in topics])
        else:
            packet = subscribe_packet(pid, topics)
        req = _Request(topics)
        self._requests[pid] = req
        if not await self._send(packet):
            self._requests.pop(pid, None)
            return None
        return req

    def _new_pid(self):
        pid = self._pid
        while True:
            pid = next_packet_id(pid)
            if pid not in self._inflight and pid not in self._requests:
                self._pid = pid
                return pid

    # ---- the connection ------------------------------------------------------------------

    async def _run(self, conn):
        """The supervisor: keeps a connection up until cancelled by stop(). `conn`: one that
        connect() has begun already, or None."""
        attempt = 0
        while True:
            if conn is None:
                try:
                    conn, present = await self._open_session()
                except Exception as e:
                    self.last_error = e
                    attempt += 1
                    await _sleep_ms(self._backoff(attempt))
                    continue
                try:
                    await self._begin(conn, present)
                except BaseException:
                    await self._end(conn)
                    raise
            began = ticks_ms()
            try:
                await conn.dead.wait()
            finally:
                await self._end(conn)
            conn = None
            if ticks_diff(ticks_ms(), began) >= _STABLE_MS:
                attempt = 0
            attempt += 1  # even after a long session, wait a little (jittered) first
            await _sleep_ms(self._backoff(attempt))

    def _backoff(self, attempt):
        return backoff_delay_ms(attempt, self.backoff_ms, self.backoff_max_ms,
                                random.getrandbits(16))

    async def _open_session(self):
        """Open the stream and exchange CONNECT / CONNACK: (conn, session_present)."""
        reader, writer = await self._open()
        conn = _Conn(reader, writer, self.max_packet)
        ok = False
        try:
            writer.write(self._connect_packet)
            await writer.drain()
            try:
                connack = await asyncio.wait_for(self._read_connack(conn),
                                                 self.connect_timeout_ms / 1000)
            except asyncio.TimeoutError:
                raise ConnectionLost("no CONNACK within %d ms" % self.connect_timeout_ms)
            if connack.code != 0:
                raise ConnectRefused(connack.code)
            ok = True
            return conn, connack.session_present
        finally:
            if not ok:
                await close_stream(writer)

    async def _read_connack(self, conn):
        while True:
            packet = conn.decoder.next_packet()
            if packet is not None:
                if packet.kind != CONNACK:
                    raise ProtocolError("expected CONNACK, got packet type %d" % packet.kind)
                return packet
            data = await conn.reader.read(_RX_CHUNK)
            if not data:
                raise ConnectionLost("the broker closed the connection before CONNACK")
            conn.decoder.feed(data)
            conn.last_rx = ticks_ms()

    async def _begin(self, conn, present):
        # Connected: start reading and pinging, resend what is unacknowledged, then announce.
        self._conn = conn
        self.session_present = present
        conn.tasks.append(asyncio.create_task(self._read_loop(conn)))
        if self.keepalive:
            conn.tasks.append(asyncio.create_task(self._keepalive(conn)))
        await self._resume(conn, present)
        if conn.dead.is_set():
            return
        self.connects += 1
        if self.on_connect is not None:
            conn.tasks.append(asyncio.create_task(self._announce(self.on_connect, present)))

    async def _resume(self, conn, present):
        # Under the write lock, so that a publish() made meanwhile goes out after these.
        async with self._wlock:
            topics = []
            for flt in self._subs:
                if not present or flt in self._unconfirmed:
                    topics.append((flt, self._subs[flt]))
            if topics:
                pid = self._new_pid()
                self._requests[pid] = _Request(topics)
                if not await self._write_locked(conn, subscribe_packet(pid, topics)):
                    return
            for pid in list(self._order):
                entry = self._inflight.get(pid)
                if entry is None:
                    continue  # acknowledged meanwhile
                if entry[2]:
                    set_dup(entry[0])
                entry[2] = True
                if not await self._write_locked(conn, entry[0]):
                    return
            self.connected.set()

    async def _end(self, conn):
        # Tear a connection down (once): stop its tasks, close it, fail waiting requests.
        if conn.ended:
            return
        conn.ended = True
        if self._conn is conn:
            self._conn = None
        self.connected.clear()
        conn.dead.set()
        for task in conn.tasks:
            task.cancel()
        await close_stream(conn.writer, not conn.graceful)
        requests = self._requests
        self._requests = {}
        for pid in requests:
            requests[pid].done.set()
        if self.on_disconnect is not None:
            self._call(self.on_disconnect, self.last_error)

    def _lost(self, conn, error):
        if not conn.dead.is_set():
            self.last_error = error
            conn.dead.set()
            if conn is self._conn:
                self.connected.clear()

    async def _send(self, data):
        # One packet on the current connection; False when there is none or it failed.
        async with self._wlock:
            conn = self._conn
            if conn is None:
                return False
            return await self._write_locked(conn, data)

    async def _write_locked(self, conn, data):
        if conn.dead.is_set():
            return False
        try:
            conn.writer.write(data)
            await conn.writer.drain()
        except Exception as e:
            self._lost(conn, e)
            return False
        conn.last_tx = ticks_ms()
        return True

    async def _read_loop(self, conn):
        try:
            while True:
                packet = conn.decoder.next_packet()
                if packet is not None:
                    await self._handle(packet)
                    continue
                data = await conn.reader.read(_RX_CHUNK)
                if not data:
                    raise ConnectionLost("the broker closed the connection")
                conn.decoder.feed(data)
                conn.last_rx = ticks_ms()
                conn.ping_at = None  # anything received shows the broker is alive
        except Exception as e:
            self._lost(conn, e)

    async def _handle(self, packet):
        kind = packet.kind
        if kind == PUBLISH:
            if self.on_message is not None:
                self._call(self.on_message, packet.topic, packet.payload, packet.retain)
            if packet.qos:
                await self._send(puback_packet(packet.pid))
        elif kind == PUBACK:
            self._acked(packet.pid)
        elif kind == SUBACK or kind == UNSUBACK:
            self._answered(packet)
        elif kind == PINGRESP:
            self.pings += 1
        else:
            raise ProtocolError("unexpected CONNACK")

    def _acked(self, pid):
        entry = self._inflight.pop(pid, None)
        if entry is None:
            return  # a PUBACK for a resend already acknowledged
        self._order.remove(pid)
        self._slot.set()
        if self.on_puback is not None:
            self._call(self.on_puback, pid, entry[1])

    def _answered(self, packet):
        req = self._requests.pop(packet.pid, None)
        if req is None:
            return
        if packet.kind == SUBACK:
            if len(packet.granted) != len(req.topics):
                raise ProtocolError("SUBACK does not answer every topic filter")
            for i in range(len(req.topics)):
                flt = req.topics[i][0]
                self._unconfirmed.discard(flt)
                if packet.granted[i] == SUBACK_FAILURE:
                    self._subs.pop(flt, None)
                    self.last_error = SubscribeFailed("the broker refused %s" % flt)
        req.answer = packet
        req.done.set()

    async def _keepalive(self, conn):
        keepalive_ms = self.keepalive * 1000
        timeout = self.ping_timeout_ms
        tick = max(50, min(1000, keepalive_ms // 4))
        while not conn.dead.is_set():
            await _sleep_ms(tick)
            now = ticks_ms()
            if conn.ping_at is not None:
                if ticks_diff(now, conn.ping_at) > timeout:
                    self._lost(conn, ConnectionLost("no answer to PINGREQ within %d ms"
                                                    % timeout))
                    return
            elif (ticks_diff(now, conn.last_tx) >= keepalive_ms // 2
                  or ticks_diff(now, conn.last_rx) >= keepalive_ms):
                conn.ping_at = now
                try:
                    # Bounded: a write stuck in drain() holds the lock, and that is dead too.
                    await asyncio.wait_for(self._send(PINGREQ_PACKET), timeout / 1000)
                except asyncio.TimeoutError:
                    self._lost(conn, ConnectionLost("could not send PINGREQ within %d ms"
                                                    % timeout))
                    return

    async def _announce(self, hook, present):
        try:
            result = hook(present)
            if result is not None and hasattr(result, "send"):
                await result
        except Exception as e:
            self.callback_error = e

    def _call(self, callback, *args):
        try:
            callback(*args)
        except Exception as e:
            self.callback_error = e
