"""The raw-literal encoding that carries binary data in raw-paste code."""

from __future__ import annotations

import random

from host_tools.board import literal

FORBIDDEN_RAW = {0x00, 0x01, 0x02, 0x03, 0x04, 0x0A, 0x0D, 0x27, 0x5C}


def _samples():
    rng = random.Random(7)
    yield b""
    yield bytes(range(256)) * 3
    yield b"~~~0~1~9~" + bytes([0x7E, 0x30]) * 5  # escapes next to look-alikes
    for n in (1, 2, 3, 100, 4096, 50000):
        yield bytes(rng.getrandbits(8) for _ in range(n))


def test_round_trip_for_every_byte_value_and_random_data():
    for data in _samples():
        assert literal.decode(literal.encode(data)) == data


def test_nothing_that_ends_a_literal_or_a_paste_travels_raw():
    for data in _samples():
        body = literal.encode(data)
        assert not FORBIDDEN_RAW & set(body)
        # every ESC starts a pair with a digit
        i = body.find(b"~")
        while i >= 0:
            assert body[i + 1:i + 2].isdigit()
            i = body.find(b"~", i + 2)


def test_overhead_on_compressed_data_is_small():
    rng = random.Random(1)
    data = bytes(rng.getrandbits(8) for _ in range(100_000))
    assert len(literal.encode(data)) < 1.06 * len(data)  # base64 would be 1.33x


def test_literal_only_undoes_escapes_it_used():
    src = literal.literal(b"abc\x03def")
    assert src.startswith(b"rb'abc~3def'")
    assert src.count(b".replace(") == 1
