# Portable tests (CPython and the MicroPython VM) for core.outbox.Outbox.
import gc
import os

from core.outbox import Outbox
from skip import SkipTest

try:
    import tempfile
except ImportError:  # the VM: an in-memory filesystem, cwd "/"
    tempfile = None

_made = [0]


def scratch():
    """A fresh directory path that does not exist yet (the outbox creates it)."""
    _made[0] += 1
    if tempfile is not None:
        return tempfile.mkdtemp(prefix="outbox") + "/ob"
    return "/tmp_outbox_" + str(_made[0]) + "/ob"


def rmtree(path):
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        p = path + "/" + name
        if os.stat(p)[0] & 0x4000:
            rmtree(p)
        else:
            os.remove(p)
    os.rmdir(path)


def cleanup(path):
    rmtree(path[: path.rfind("/")])


def in_scratch(test):
    # The test gets a fresh outbox directory, removed afterwards whatever happens. No
    # pytest fixture: the same tests run in the MicroPython VM, which calls them bare.
    def run():
        d = scratch()
        try:
            test(d)
        finally:
            cleanup(d)

    return run


def segs(path):
    return sorted(n for n in os.listdir(path) if n.endswith(".seg"))


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def fill(ob, n, tag="e"):
    """Append n records whose payload names their seq; returns the seqs."""
    out = []
    for _ in range(n):
        seq = ob.next_seq
        out.append(ob.append(body(seq, tag), seq))
    return out


def body(seq, tag="e"):
    return ('{"' + tag + '":' + str(seq) + "}").encode()


def seqs_of(records):
    return [s for s, _ in records]


def all_pending(ob):
    return ob.pending(limit=100000)


@in_scratch
def test_missing_directory_is_created(d):
    ob = Outbox(d + "/x/y")
    assert ob.next_seq == 1 and ob.depth == 0 and ob.bytes_used == 0
    assert ob.append(b"a") == 1
    ob.close()
    assert segs(d + "/x/y") == ["0000000001.seg"]


@in_scratch
def test_append_pending_ack_in_order(d):
    ob = Outbox(d)
    assert fill(ob, 5) == [1, 2, 3, 4, 5]
    recs = ob.pending(limit=3)
    assert recs == [(1, body(1)), (2, body(2)), (3, body(3))]
    assert seqs_of(ob.pending(after=3, limit=10)) == [4, 5]
    assert seqs_of(ob.pending(after=1, limit=10, before=4)) == [2, 3]
    assert ob.depth == 5
    assert ob.ack(1) and ob.ack(2)
    assert ob.acked == 2 and ob.depth == 3
    assert seqs_of(all_pending(ob)) == [3, 4, 5]
    assert not ob.ack(2)  # already acked
    assert not ob.ack(9)  # never appended
    assert not ob.ack(0)
    ob.close()


@in_scratch
def test_append_checks_seq_and_size(d):
    ob = Outbox(d, budget_bytes=512, segment_bytes=128)
    for bad in (lambda: ob.append(b"x", 2), lambda: ob.append(b"x" * 117)):
        try:
            bad()
        except ValueError:
            pass
        else:
            raise AssertionError("expected ValueError")
    assert ob.append(b"x" * 116, 1) == 1  # 12 + 116 = 128: exactly one segment
    assert ob.append("text") == 2
    assert all_pending(ob) == [(1, b"x" * 116), (2, b"text")]
    try:
        Outbox(d, budget_bytes=255, segment_bytes=128)
    except ValueError:
        pass
    else:
        raise AssertionError("budget below two segments accepted")
    ob.close()


@in_scratch
def test_seq_contiguous_across_reopen(d):
    got = []
    for round_ in range(4):
        ob = Outbox(d, budget_bytes=4096, segment_bytes=256)
        assert ob.next_seq == len(got) + 1
        got += fill(ob, 7 + round_)
        ob.ack(ob.acked + 1)
        ob.close()
    assert got == list(range(1, len(got) + 1))
    ob = Outbox(d, budget_bytes=4096, segment_bytes=256)
    assert ob.acked == 4
    assert all_pending(ob) == [(s, body(s)) for s in range(5, len(got) + 1)]
    ob.close()


@in_scratch
def test_seq_never_reused_after_everything_is_acked(d):
    ob = Outbox(d, budget_bytes=1024, segment_bytes=128)
    for s in fill(ob, 40):
        assert ob.ack(s)
    assert ob.depth == 0 and ob.acked == 40
    assert len(segs(d)) == 1  # only the newest segment is left
    ob.close()
    ob = Outbox(d, budget_bytes=1024, segment_bytes=128)
    assert ob.next_seq == 41 and ob.depth == 0 and all_pending(ob) == []
    assert ob.append(b"n") == 41
    assert ob.ack(41)
    ob.close()
    # Either source alone keeps seq: the ack log without segments...
    for name in segs(d):
        os.remove(d + "/" + name)
    ob = Outbox(d, budget_bytes=1024, segment_bytes=128)
    assert ob.next_seq == 42
    assert ob.append(b"m") == 42
    ob.close()
    # ...and the newest segment without the ack log.
    os.remove(d + "/acks.log")
    ob = Outbox(d, budget_bytes=1024, segment_bytes=128)
    assert ob.next_seq == 43
    assert seqs_of(all_pending(ob)) == [42]
    ob.close()


@in_scratch
def test_out_of_order_acks_within_the_window(d):
    ob = Outbox(d, window=4)
    fill(ob, 10)
    assert ob.ack(3) and ob.ack(2)
    assert ob.acked == 0 and ob.depth == 8
    assert seqs_of(ob.pending(limit=4)) == [1, 4, 5, 6]  # acked ones are left out
    assert not ob.ack(5)  # beyond acked + window
    assert not ob.ack(3)  # twice
    assert ob.ack(4)
    assert ob.ack(1)
    assert ob.acked == 4 and ob.depth == 6
    assert ob.ack(6) and ob.ack(5)
    assert ob.acked == 6
    assert ob.ack(8)  # stays in RAM: 7 is not acked
    ob.close()
    ob = Outbox(d, window=4)
    assert ob.acked == 6
    assert seqs_of(all_pending(ob)) == [7, 8, 9, 10]  # 8 again: its ack was not durable
    ob.close()


@in_scratch
def test_segments_roll_over_and_go_when_acked(d):
    # '{"e":N}' records take 19 bytes (20 from seq 10): 4 per 80-byte segment
    ob = Outbox(d, budget_bytes=2048, segment_bytes=80)
    fill(ob, 10)
    assert segs(d) == ["0000000001.seg", "0000000005.seg", "0000000009.seg"]
    used = ob.bytes_used
    assert used == sum(os.stat(d + "/" + n)[6] for n in segs(d)) == 4 * 19 + 4 * 19 + 39
    for s in (1, 2, 3):
        ob.ack(s)
    assert len(segs(d)) == 3
    ob.ack(4)  # the first segment is all acked
    assert segs(d) == ["0000000005.seg", "0000000009.seg"]
    assert ob.bytes_used == used - 4 * 19
    for s in range(5, 11):
        ob.ack(s)
    assert segs(d) == ["0000000009.seg"]  # the newest one stays
    for s in fill(ob, 2):
        ob.ack(s)
    assert segs(d) == ["0000000009.seg"] and ob.depth == 0
    fill(ob, 1)  # a roll-over deletes the all-acked former newest segment
    assert segs(d) == ["0000000013.seg"]
    assert all_pending(ob) == [(13, body(13))]
    ob.close()


@in_scratch
def test_budget_drops_oldest_and_counts(d):
    ob = Outbox(d, budget_bytes=160, segment_bytes=80)  # 2 segments of 4 records
    fill(ob, 8)
    assert ob.dropped == 0
    assert ob.ack(1)
    assert ob.ack(3)  # out of order, then dropped with its segment: not counted
    fill(ob, 1)  # seq 9: a third segment would break the budget
    assert ob.dropped == 2  # 2 and 4
    assert ob.bytes_used <= 160
    assert ob.acked == 4
    assert seqs_of(all_pending(ob)) == [5, 6, 7, 8, 9]
    fill(ob, 8)
    assert ob.dropped == 10
    assert seqs_of(all_pending(ob)) == [13, 14, 15, 16, 17]
    ob.close()
    ob = Outbox(d, budget_bytes=160, segment_bytes=80)
    assert ob.dropped == 10  # persistent
    assert ob.next_seq == 18 and ob.acked == 12
    assert seqs_of(all_pending(ob)) == [13, 14, 15, 16, 17]
    ob.close()


def test_torn_tail_at_every_byte_of_the_last_record():
    base = scratch()
    try:
        d = base + "0"
        ob = Outbox(d)
        fill(ob, 3)
        ob.close()
        whole = read(d + "/0000000001.seg")
        start = len(whole) - len(body(3)) - 12
        for cut in range(start, len(whole)):
            d = base + str(cut)
            ob = Outbox(d)
            fill(ob, 3)
            ob.close()
            write(d + "/0000000001.seg", whole[:cut])
            ob = Outbox(d)
            assert all_pending(ob) == [(1, body(1)), (2, body(2))], cut
            assert ob.torn == (1 if cut > start else 0) and ob.corrupt == 0
            assert ob.next_seq == 3
            assert ob.append(b"again") == 3
            assert ob.append(b"more") == 4
            ob.close()
            ob = Outbox(d)
            assert all_pending(ob) == [(1, body(1)), (2, body(2)), (3, b"again"), (4, b"more")]
            assert ob.torn == 0 and ob.corrupt == 0
            ob.close()
            rmtree(d)
    finally:
        cleanup(base)


@in_scratch
def test_torn_ack_log_keeps_the_last_whole_record(d):
    ob = Outbox(d)
    fill(ob, 6)
    for s in (1, 2, 3):
        ob.ack(s)
    ob.close()
    log = read(d + "/acks.log")
    assert len(log) == 4 * 12  # the record of the open, then one per ack
    for cut in range(len(log) - 12, len(log) + 1):
        write(d + "/acks.log", log[:cut])
        ob = Outbox(d)
        assert ob.acked == (3 if cut == len(log) else 2)
        ob.close()


@in_scratch
def test_leftover_copies_of_a_cut_rename(d):
    ob = Outbox(d)
    fill(ob, 3)
    ob.ack(1)
    ob.close()
    seg = read(d + "/0000000001.seg")
    log = read(d + "/acks.log")
    # A repair copy next to its segment was cut short: it goes.
    write(d + "/0000000001.tmp", seg[:7])
    # On FAT a rename removes its target first: a copy alone is whole, and used.
    os.rename(d + "/acks.log", d + "/acks.tmp")
    ob = Outbox(d)
    assert ob.acked == 1 and seqs_of(all_pending(ob)) == [2, 3]
    ob.close()
    assert sorted(os.listdir(d)) == ["0000000001.seg", "acks.log"]
    os.rename(d + "/0000000001.seg", d + "/0000000001.tmp")
    write(d + "/acks.tmp", log[:5])  # a compaction cut short
    ob = Outbox(d)
    assert ob.acked == 1 and all_pending(ob) == [(2, body(2)), (3, body(3))]
    ob.close()
    assert sorted(os.listdir(d)) == ["0000000001.seg", "acks.log"]


@in_scratch
def test_garbage_and_empty_files_never_stop_the_outbox(d):
    Outbox(d).close()
    os.remove(d + "/acks.log")
    write(d + "/junk.txt", b"\xa7\x01hello")
    write(d + "/abc.seg", b"\xa7\x01\x00\x00")
    write(d + "/0000000000.seg", b"")
    write(d + "/0000000003.seg", b"\xa7\x01\x05\x00\x03\x00\x00\x00garbage-garbage")
    write(d + "/0000000007.seg", b"")
    write(d + "/acks.log", b"\xff" * 30)
    ob = Outbox(d)
    assert ob.next_seq == 7 and ob.depth == 0 and ob.corrupt == 1
    assert segs(d) == ["0000000000.seg", "0000000007.seg", "abc.seg"]  # 3 was removed
    assert ob.append(b"ok") == 7
    ob.close()
    ob = Outbox(d)
    assert all_pending(ob) == [(7, b"ok")]
    assert ob.corrupt == 0 and ob.torn == 0
    ob.close()
    assert "junk.txt" in os.listdir(d)  # not ours: left alone
    # A segment that is all garbage, and a zero-length one as the only segment.
    for i, junk in enumerate((b"\x00" * 40, b"\xff" * 40, b"", b"\xa7")):
        e = d + "x" + str(i)
        Outbox(e).close()
        write(e + "/0000000001.seg", junk)
        ob = Outbox(e)
        assert ob.next_seq == 1 and all_pending(ob) == []
        assert ob.append(b"a") == 1
        assert all_pending(ob) == [(1, b"a")]
        ob.close()
        rmtree(e)


@in_scratch
def test_corrupt_record_in_an_earlier_segment_is_skipped(d):
    ob = Outbox(d, budget_bytes=2048, segment_bytes=80)
    fill(ob, 10)  # segments at 1, 5, 9; 19-byte records
    ob.close()
    p = d + "/0000000001.seg"
    data = bytearray(read(p))
    data[19 + 14] ^= 0x10  # a payload byte of seq 2
    write(p, data)
    ob = Outbox(d, budget_bytes=2048, segment_bytes=80)
    assert ob.corrupt == 1 and ob.torn == 0
    assert seqs_of(all_pending(ob)) == [1, 5, 6, 7, 8, 9, 10]
    assert ob.ack(1)
    assert ob.acked == 4  # 2..4 are gone: the prefix moves over them
    assert ob.next_seq == 11
    ob.close()


@in_scratch
def test_corrupt_tail_behind_the_acked_prefix(d):
    ob = Outbox(d)
    for s in fill(ob, 10):
        ob.ack(s)
    ob.close()
    p = d + "/0000000001.seg"
    data = bytearray(read(p))
    data[8 * 19 + 13] ^= 0x40  # seq 9: whole, but its CRC fails (not a torn tail)
    write(p, data)
    ob = Outbox(d)
    assert ob.corrupt == 1 and ob.torn == 0
    assert ob.next_seq == 11 and ob.depth == 0  # the ack log still has 10
    assert ob.append(b"x") == 11  # into a new segment, not after seq 8
    ob.close()
    ob = Outbox(d)
    assert all_pending(ob) == [(11, b"x")] and ob.corrupt == 0
    ob.close()


@in_scratch
def test_corruption_found_while_reading_is_never_sent(d):
    ob = Outbox(d)
    fill(ob, 4)
    p = d + "/0000000001.seg"
    data = bytearray(read(p))
    data[3 * 19 - 1] ^= 0x01  # last payload byte of seq 3 (flash fault after open)
    write(p, data)
    assert seqs_of(all_pending(ob)) == [1, 2]
    assert ob.corrupt == 1 and ob.depth == 2
    assert ob.append(b"after") == 5  # into a new segment
    assert all_pending(ob) == [(1, body(1)), (2, body(2)), (5, b"after")]
    assert ob.ack(1) and ob.ack(2)
    assert ob.acked == 4 and ob.depth == 1
    ob.close()
    ob = Outbox(d)
    assert all_pending(ob) == [(5, b"after")]
    ob.close()


@in_scratch
def test_reconnect_replays_from_the_oldest_unacked(d):
    ob = Outbox(d, budget_bytes=1024, segment_bytes=128)
    fill(ob, 12)
    sent = []
    last = 0
    while len(sent) < 9:  # publisher: 3 in flight
        recs = ob.pending(after=last, limit=3)
        sent += seqs_of(recs)
        last = recs[-1][0]
        ob.ack(recs[1][0])  # PUBACKs for the middle and last ones arrive
        ob.ack(recs[2][0])
    assert sent == list(range(1, 10))
    # reconnect: resend from the oldest unacked; acked ones are left out
    assert seqs_of(ob.pending(limit=20)) == [1, 4, 7, 10, 11, 12]
    ob.close()


@in_scratch
def test_live_events_go_out_during_a_replay(d):
    ob = Outbox(d, budget_bytes=8192, segment_bytes=512)
    fill(ob, 60, "old")  # a backlog from a time offline
    live_from = ob.next_seq  # the publisher reconnects
    replay, live = 0, live_from - 1
    replayed, lives = [], []
    for _ in range(30):
        fill(ob, 1, "new")
        old = ob.pending(after=replay, limit=2, before=live_from)
        new = ob.pending(after=live, limit=1)
        for s, _ in new + old:  # the live event's PUBACK comes first, far ahead
            assert ob.ack(s), s
        replay = old[-1][0] if old else replay
        live = new[-1][0] if new else live
        replayed += seqs_of(old)
        lives += seqs_of(new)
    assert replayed == list(range(1, 61))
    assert lives == list(range(61, 91))  # each sent in the round it was made
    assert ob.acked == 90 and ob.depth == 0 and len(segs(d)) == 1
    ob.close()


def test_steady_state_appends_and_acks_allocate_little():
    if not hasattr(gc, "mem_alloc"):
        raise SkipTest("gc.mem_alloc: MicroPython only")
    d = scratch()
    try:
        ob = Outbox(d, budget_bytes=65536, segment_bytes=16384)
        payload = b'{"seq":0,"lane":3,"count":-1,"delta_g":-412}'
        for _ in range(4):
            ob.ack(ob.append(payload))
        n = 64
        gc.collect()
        before = gc.mem_alloc()
        for _ in range(n):
            ob.ack(ob.append(payload))
        grown = gc.mem_alloc() - before
        # crc32 values above 2**30 are heap ints; a compaction every 16 acks opens files
        assert grown < 160 * n, grown
        assert ob.depth == 0
        ob.close()
    finally:
        cleanup(d)
