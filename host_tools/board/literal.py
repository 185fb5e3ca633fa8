"""Binary data inside raw-paste code, at about 4 % overhead instead of base64's 33 %.

MicroPython's lexer keeps a raw bytes literal (rb'...') 8-bit clean: every byte between the
quotes reaches the bytes object unchanged, except the few that end the literal or the paste.
Those are escaped with ESC + a digit; the board undoes it with one bytes.replace per escaped
value, in C, with no per-byte Python loop.

Bytes that cannot travel raw:
- 0x03, 0x04: end (and abort) raw-paste mode; 0x01, 0x02: raw REPL control bytes (the plain
  raw REPL a board falls back to, and the virtual board's VM, would act on them);
- 0x00: kept out of source text to be safe;
- 0x0A, 0x0D: a newline ends a single-quoted literal (and the lexer turns CR into LF);
- 0x27 (the quote) and 0x5C (backslash: before a quote it would hide it);
- ESC itself.

Decoding replaces ESC+digit for every value but ESC first, ESC's own pair last: every ESC in
the encoded text starts a pair, so the earlier replacements (which never produce ESC) cannot
create a false pair, and the last one scans left to right over genuine pairs only.
"""

from __future__ import annotations

ESC = 0x7E  # "~"
ESCAPED = (0x00, 0x01, 0x02, 0x03, 0x04, 0x0A, 0x0D, 0x27, 0x5C, ESC)  # ESC last
_CODE = {b: ord("0") + i for i, b in enumerate(ESCAPED)}
_TABLE = {b: bytes((ESC, c)) for b, c in _CODE.items()}


def encode(data: bytes) -> bytes:
    """The raw-literal body for `data` (without rb'' around it)."""
    out = bytearray()
    start = 0
    for i, b in enumerate(data):
        pair = _TABLE.get(b)
        if pair is not None:
            out += data[start:i]
            out += pair
            start = i + 1
    out += data[start:]
    return bytes(out)


def literal(data: bytes) -> bytes:
    """Source text of an expression that evaluates to `data` on the board."""
    body = b"rb'" + encode(data) + b"'"
    for b in ESCAPED:
        if b not in data:  # each replace costs 25 bytes of wire: only those needed
            continue
        body += b".replace(b'~" + bytes((_CODE[b],)) + b"', " + _py_byte(b) + b")"
    return body


def decode(body: bytes) -> bytes:
    """What the board computes from encode(data): for tests on the host."""
    for b in ESCAPED:
        body = body.replace(bytes((ESC, _CODE[b])), bytes((b,)))
    return body


def _py_byte(b: int) -> bytes:
    return b"b'\\x%02x'" % b


def packed_code(source: str) -> bytes:
    """`source` compressed, as code that inflates and runs it on the board: long board-side
    routines cost a third of their size on the wire (a 512-byte deflate window keeps the
    board's memory for it small)."""
    import zlib

    z = zlib.compressobj(9, zlib.DEFLATED, 9)
    data = z.compress(source.encode()) + z.flush()
    return (b"import deflate, io\nexec(deflate.DeflateIO(io.BytesIO(" + literal(data)
            + b"), deflate.ZLIB).read())")
