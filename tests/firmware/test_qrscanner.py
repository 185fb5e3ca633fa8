# Portable tests (CPython and the MicroPython VM): the UART QR scanner driver.
import machine
from drivers.qrscanner import MAX_CODE, QRScanner


def scanner():
    machine.fake_reset()
    uart = machine.UART(1, baudrate=9600, tx=20, rx=21)
    return uart, QRScanner(uart)


def test_codes_end_with_cr_lf_or_both():
    uart, s = scanner()
    assert s.poll() is None
    uart.feed(b"SHOP-123\r")
    assert s.poll() == "SHOP-123"
    uart.feed(b"A1\r\nB2\nC3\r")
    assert [s.poll(), s.poll(), s.poll(), s.poll()] == ["A1", "B2", "C3", None]
    assert s.scans == 4 and s.dropped == 0


def test_a_code_split_across_reads_comes_out_whole():
    uart, s = scanner()
    uart.feed(b"store:ab")
    assert s.poll() is None
    uart.feed(b"cd\r")
    assert s.poll() == "store:abcd"


def test_too_long_and_binary_codes_are_dropped_not_cut():
    uart, s = scanner()
    data = b"x" * (MAX_CODE + 10) + b"\rOK1\r"
    got = []
    for i in range(0, len(data), 64):  # as it arrives, polled between chunks
        uart.feed(data[i:i + 64])
        got.append(s.poll())
    assert [g for g in got if g is not None] == ["OK1"] and s.poll() is None
    assert uart.overruns == 0
    uart.feed(b"\x01\xffbad\rOK2\r")
    assert s.poll() == "OK2"
    assert s.dropped == 2


def test_a_full_receive_buffer_loses_bytes_as_a_board_does():
    uart, s = scanner()
    uart.feed(b"y" * 300)
    assert uart.any() == 256 and uart.overruns == 1
