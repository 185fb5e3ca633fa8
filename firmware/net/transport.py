"""The MQTT client's way to its broker: a TCP or TLS stream from asyncio.open_connection.

The client needs only an object with `async open()` returning (reader, writer), where
    reader: `await read(n)` -> up to n bytes, b"" at the end of the stream
    writer: write(data), `await drain()`, close(), and `await wait_closed()` when it has one.
`Transport` is that object on the board (and in CPython, whose asyncio and ssl take the same
calls); a virtual board passes its own. TLS always verifies the broker's certificate against
the CA given (cafile: a path; cadata: the certificate's bytes, PEM or DER) and its host name.
`ssl` is imported only when a TLS stream is opened, so this module imports on ports without it.
"""

import asyncio

from net.mqtt_wire import parse_broker_url


class Transport:
    def __init__(self, host, port, tls=False, cafile=None, cadata=None, server_hostname=None,
                 timeout_ms=10000):
        if tls and cafile is None and cadata is None:
            raise ValueError("TLS needs the broker's CA (cafile= or cadata=) to verify it")
        self.host = host
        self.port = port
        self.tls = tls
        self.cafile = cafile
        self.cadata = cadata
        self.server_hostname = server_hostname or host
        self.timeout_ms = timeout_ms
        self._ctx = None  # the SSLContext, made at the first TLS open and kept

    @classmethod
    def from_url(cls, url, cafile=None, cadata=None, server_hostname=None, timeout_ms=10000):
        """A transport for 'mqtt://host[:port]' or 'mqtts://host[:port]'."""
        host, port, tls = parse_broker_url(url)
        return cls(host, port, tls, cafile, cadata, server_hostname, timeout_ms)

    async def open(self):
        """(reader, writer) of a new connection; raises OSError (or TimeoutError) on failure."""
        if self.tls:
            if self._ctx is None:
                self._ctx = tls_context(self.cafile, self.cadata)
            opening = asyncio.open_connection(self.host, self.port, ssl=self._ctx,
                                              server_hostname=self.server_hostname)
        else:
            opening = asyncio.open_connection(self.host, self.port)
        return await asyncio.wait_for(opening, self.timeout_ms / 1000)


def tls_context(cafile=None, cadata=None):
    """A client SSLContext that requires a certificate chaining to the given CA."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cafile is not None:
        ctx.load_verify_locations(cafile=cafile)
    elif cadata is not None:
        _load_cadata(ctx, bytes(cadata))
    return ctx


_PEM_END = "-----END CERTIFICATE-----"


def _load_cadata(ctx, data):
    import sys

    if data[:10] != b"-----BEGIN" or sys.implementation.name == "micropython":
        ctx.load_verify_locations(cadata=data)  # mbedtls takes PEM or DER bytes
        return
    # CPython takes PEM cadata only as str; as bytes it wants DER, one certificate a call.
    import ssl

    for pem in data.decode().split(_PEM_END)[:-1]:
        ctx.load_verify_locations(cadata=ssl.PEM_cert_to_DER_cert(pem.strip() + "\n" + _PEM_END))


async def close_stream(writer, abort=True, timeout_ms=1000):
    """Close a stream without ever raising. abort: drop unsent data (CPython's transport.abort,
    which also ends a write stuck in drain()); else let it flush first. On MicroPython
    wait_closed() is what closes the socket."""
    transport = getattr(writer, "transport", None)
    abort_now = getattr(transport, "abort", None) if abort else None
    try:
        if abort_now is not None:
            abort_now()
        else:
            writer.close()
    except Exception:
        pass
    wait_closed = getattr(writer, "wait_closed", None)
    if wait_closed is not None:
        try:
            await asyncio.wait_for(wait_closed(), timeout_ms / 1000)
        except Exception:
            pass
