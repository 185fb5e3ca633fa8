"""Durable event outbox: an event goes to flash first and to the broker second, and leaves
flash only once the broker has acknowledged it (PUBACK). Format and guarantees: docs/outbox.md.

Files in the outbox directory (nothing else in it is touched):
  0000000001.seg ...  segments: append-only records with consecutive seqs, named after the
                      first seq (zero-padded, so names sort in seq order)
  acks.log            ack state: 12-byte records (acked, dropped, crc32); the greatest valid
                      values win
  acks.tmp            the ack log being compacted (written whole, then renamed over acks.log)
  0000000001.tmp      a segment being repaired after a power cut (same, over its .seg)
Record: magic 0xA7, version 1, payload length (u16), seq (u32), crc32 (u32) over the first
8 header bytes and the payload, all little-endian; then the payload.

Seq: 1, 2, 3, ... for the life of the directory, assigned here. A seq that append() returned
is never handed out again, whatever happens to the power: the newest segment is never
deleted (its name and records hold the highest seq) and the ack state holds the acked prefix.
Not thread-safe; callers on one asyncio loop must not await between reading next_seq and
append().
"""

import binascii
import os
import struct

from micropython import const

_MAGIC = const(0xA7)
_VERSION = const(1)
_HDR = const(12)  # record header bytes
_ACK_REC = const(12)  # ack log record bytes
_ACK_LOG_MAX = const(16)  # ack records appended before the log is rewritten as one
_CHUNK = const(128)  # read buffer for checking and copying records
_MAX_LEN = const(0xFFFF)  # the length field is a u16
_SEQ_MAX = 0xFFFFFFFF  # seq is a u32 on flash (no const: not a small int on the ESP32)

_EXT = ".seg"
_TMP = ".tmp"
_ACK_LOG = "acks.log"
_ACK_TMP = "acks.tmp"


def _join(d, name):
    return d + name if d.endswith("/") else d + "/" + name


def _u32(b, i):
    return b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24)


def _mkdirs(path):
    # MicroPython has no os.makedirs: create each missing level; mkdir fails on existing ones.
    i = 0
    while True:
        i = path.find("/", i + 1)
        sub = path if i < 0 else path[:i]
        try:
            os.mkdir(sub)
        except OSError:
            pass
        if i < 0:
            return


def _seg_name(first, ext=_EXT):
    s = str(first)
    return "0" * (10 - len(s)) + s + ext


def _seg_first(name, ext=_EXT):
    """The first seq a segment (or its repair copy) name stands for; 0: no such name."""
    if len(name) != 14 or not name.endswith(ext) or not name[:10].isdigit():
        return 0
    n = int(name[:10])
    return n if n <= _SEQ_MAX else 0


class _Seg:
    # One segment file: records first..last (last = first - 1 when empty), size bytes.
    def __init__(self, path, first, last, size):
        self.path = path
        self.first = first
        self.last = last
        self.size = size


class Outbox:
    """Flash-first event queue with broker acks.

    path: directory (created if missing). budget_bytes: most bytes the segments may hold;
    when an append would exceed it, the oldest segment is dropped and its unacked records
    counted in `dropped`. segment_bytes: size at which a new segment is started; must be at
    most half the budget, and a record (12 + payload bytes) must fit in it. window: acks are
    accepted in any order for seqs up to `acked + window`; the default covers as many
    records as the budget can hold (one bit of RAM each), so live events can be acked while
    a backlog is still being replayed.

    Writing:  seq = ob.next_seq; ob.append(build_json(seq), seq)   (seq is checked)
    Sending:  ob.pending(after=last_sent, limit=n) -> [(seq, payload)] of unacked records
    Acking:   ob.ack(seq)
    Counters: dropped (persistent, for life), corrupt and torn (since this open).
    """

    def __init__(self, path, budget_bytes=65536, segment_bytes=4096, window=0):
        if segment_bytes <= _HDR or budget_bytes < 2 * segment_bytes or window < 0:
            raise ValueError("outbox sizes")
        if not window:
            window = budget_bytes // _HDR
        self.path = path
        self.budget_bytes = budget_bytes
        self.segment_bytes = segment_bytes
        self.window = window
        self.dropped = 0  # unacked records dropped for the budget, over the directory's life
        self.corrupt = 0  # bad records found (rest of their segment dropped), since open
        self.torn = 0  # torn tails (a power cut during a write) dropped, since open
        self._segs = []
        self._used = 0
        self._next = 1
        self._acked = 0  # every seq <= this is acked, dropped or missing (in RAM)
        self._durable = 0  # the same, as far as the ack log has it
        self._flags = bytearray((window + 7) >> 3)  # acks above _acked: bit seq % window
        self._nflag = 0
        self._w = None  # the newest segment, open for appending
        self._roll = False  # the newest segment may end in garbage: append to a new one
        self._ackf = None
        self._ack_n = 0  # records in acks.log
        self._log = _join(path, _ACK_LOG)
        self._log_tmp = _join(path, _ACK_TMP)
        self._hdr = bytearray(_HDR)
        self._hdr8 = memoryview(self._hdr)[:8]
        self._rhdr = bytearray(_HDR)
        self._rhdr8 = memoryview(self._rhdr)[:8]
        self._abuf = bytearray(_ACK_REC)
        self._abuf8 = memoryview(self._abuf)[:8]
        self._buf = bytearray(_CHUNK)
        self._bufmv = memoryview(self._buf)
        # Where pending() stopped, twice (a replay and a live reader): segment, seq, offset.
        self._pos = [None, 0, 0, None, 0, 0]
        self._pos_last = 0  # the slot used last
        self._open()

    # -- properties --

    @property
    def next_seq(self):
        """The seq the next append() gets."""
        return self._next

    @property
    def acked(self):
        """Every seq up to this one is acked, dropped or lost to corruption."""
        return self._acked

    @property
    def depth(self):
        """Records not acked yet."""
        a = self._acked
        d = 0
        for s in self._segs:
            lo = a + 1 if a >= s.first else s.first
            if s.last >= lo:
                d += s.last - lo + 1
        return d - self._nflag

    @property
    def bytes_used(self):
        """Bytes in segment files (the small ack log not counted)."""
        return self._used

    # -- writing --

    def append(self, payload, seq=None):
        """Store one record; it is on flash when this returns. Returns its seq. `seq`, when
        given, must be next_seq (the payload was built for it), else ValueError."""
        if isinstance(payload, str):
            payload = payload.encode()
        n = self._next
        if seq is not None and seq != n:
            raise ValueError("seq is not next_seq")
        if n > _SEQ_MAX:
            raise OverflowError("outbox seq")
        size = _HDR + len(payload)
        if size > self.segment_bytes or len(payload) > _MAX_LEN:
            raise ValueError("record too big")
        cur = self._segs[-1] if self._segs else None
        if cur is None or self._roll or cur.last + 1 != n or (
            cur.size + size > self.segment_bytes and cur.last >= cur.first
        ):
            cur = self._new_seg(n)
            self._delete_done()  # the old newest may be all acked: the new file holds seq
        while self._used + size > self.budget_bytes and len(self._segs) > 1:
            self._drop_oldest()
        h = self._hdr
        struct.pack_into("<BBHI", h, 0, _MAGIC, _VERSION, len(payload), n)
        struct.pack_into("<I", h, 8, binascii.crc32(payload, binascii.crc32(self._hdr8)))
        w = self._w
        if w is None:
            w = self._w = open(cur.path, "ab")
        try:
            w.write(h)
            w.write(payload)
            w.flush()
        except OSError:
            # A partial record may be on flash: never append after it.
            self._close_writer()
            self._roll = True
            raise
        cur.size += size
        cur.last = n
        self._used += size
        self._next = n + 1
        return n

    def _new_seg(self, first):
        self._close_writer()
        segs = self._segs
        if segs and segs[-1].first == first:  # an empty newest segment: start it over
            seg = segs[-1]
            self._used -= seg.size
            seg.size = 0
            self._forget(seg)
        else:
            seg = _Seg(_join(self.path, _seg_name(first)), first, first - 1, 0)
        self._w = open(seg.path, "wb")
        if not (segs and segs[-1] is seg):
            segs.append(seg)
        self._roll = False
        return seg

    def _drop_oldest(self):
        # Budget full: the oldest segment goes, acked or not. The ack log gets the new
        # prefix and count before the file goes, so a cut in between loses no count.
        s = self._segs[0]
        a = self._acked
        lo = a + 1 if a >= s.first else s.first
        lost = s.last - lo + 1 if s.last >= lo else 0
        for q in range(lo, min(s.last, a + self.window) + 1):
            if self._bit(q):
                lost -= 1
        if s.last > a:
            self._jump(s.last)
        self._advance()
        self.dropped += lost
        self._persist()
        self._remove_front()

    # -- reading --

    def pending(self, after=0, limit=8, before=0):
        """Up to `limit` unacked records with after < seq (< before, when given), oldest
        first, as a list of (seq, payload bytes). Records acked out of order are left out.
        After a reconnect, pending() with after=0 starts again at the oldest unacked one."""
        out = []
        seq = (after if after > self._acked else self._acked) + 1
        end = before if 0 < before < self._next else self._next
        for s in self._segs:
            if len(out) >= limit or seq >= end:
                break
            if s.last < seq:
                continue
            if seq < s.first:
                seq = s.first
            seq = self._read(s, seq, end, limit, out)
        return out

    def _read(self, s, seq, end, limit, out):
        # Walk the segment's headers from a known position, collecting records >= seq.
        pos = self._pos
        j = -1  # the slot with the furthest position in s not past seq
        for k in (0, 3):
            if pos[k] is s and pos[k + 1] <= seq and (j < 0 or pos[k + 1] > pos[j + 1]):
                j = k
        if j < 0:
            j = 3 - self._pos_last  # not the slot used last
            at, off = s.first, 0
        else:
            at, off = pos[j + 1], pos[j + 2]
        last = s.last if s.last < end else end - 1
        h = self._rhdr
        f = open(s.path, "rb")
        try:
            f.seek(off)
            while at <= last and len(out) < limit:
                if f.readinto(h) != _HDR or h[0] != _MAGIC or h[1] != _VERSION \
                        or _u32(h, 4) != at:
                    return self._cut(s, at)
                n = h[2] | (h[3] << 8)
                if at < seq or self._flagged(at):
                    f.seek(n, 1)
                else:
                    p = f.read(n)
                    if len(p) != n or binascii.crc32(p, binascii.crc32(self._rhdr8)) \
                            != _u32(h, 8):
                        return self._cut(s, at)
                    out.append((at, p))
                off += _HDR + n
                at += 1
        finally:
            f.close()
        pos[j] = s
        pos[j + 1] = at
        pos[j + 2] = off
        self._pos_last = j
        return at

    def _cut(self, s, at):
        # A bad record found after open (flash fault): it and the rest of the segment are
        # gone; the seqs become a gap and the newest segment takes no more appends.
        self.corrupt += 1
        s.last = at - 1
        self._forget(s)
        if s is self._segs[-1]:
            self._close_writer()
            self._roll = True
        self._advance()
        return at

    def _forget(self, s):
        # Read positions in s are stale.
        for k in (0, 3):
            if self._pos[k] is s:
                self._pos[k] = None

    def _flagged(self, seq):
        a = self._acked
        return a < seq <= a + self.window and self._bit(seq)

    def _bit(self, seq):
        i = seq % self.window
        return self._flags[i >> 3] & (1 << (i & 7))

    def _flip(self, seq):
        # Set a clear bit, clear a set one.
        i = seq % self.window
        self._flags[i >> 3] ^= 1 << (i & 7)

    # -- acks --

    def ack(self, seq):
        """The broker has `seq`. True when it was pending and is acked now; False when it
        was not pending (already acked, dropped, unknown) or is beyond acked + window.
        Returns once the contiguous acked prefix is on flash; acks above a gap stay in RAM
        until the gap is acked (after a power cut such records are sent again)."""
        a = self._acked
        if seq <= a or seq >= self._next or seq > a + self.window or not self._stored(seq):
            return False
        if self._bit(seq):
            return False
        self._flip(seq)
        self._nflag += 1
        if seq == a + 1:
            self._advance()
            self._persist()
            self._delete_done()
        return True

    def _stored(self, seq):
        for s in self._segs:
            if s.first <= seq <= s.last:
                return True
        return False

    def _advance(self):
        # Move the prefix over acked seqs and over seqs no segment holds.
        while self._acked + 1 < self._next:
            n = self._acked + 1
            if self._bit(n):
                self._flip(n)
                self._nflag -= 1
                self._acked = n
            else:
                g = self._gap_end(n)
                if not g:
                    return
                self._jump(g)

    def _gap_end(self, n):
        # 0 when seq n is stored, else the last seq of the gap that starts at n.
        for s in self._segs:
            if s.last >= n:
                return 0 if s.first <= n else s.first - 1
        return self._next - 1

    def _jump(self, b):
        # Prefix to b, forgetting out-of-order acks on the way (their seqs are gone).
        a = self._acked
        w = self.window
        hi = b if b < a + w else a + w
        while a < hi:
            a += 1
            if self._bit(a):
                self._flip(a)
                self._nflag -= 1
        self._acked = b

    def _pack_ack(self):
        b = self._abuf
        struct.pack_into("<II", b, 0, self._acked, self.dropped)
        struct.pack_into("<I", b, 8, binascii.crc32(self._abuf8))

    def _persist(self):
        # One 12-byte record appended and flushed; a rename every _ACK_LOG_MAX records.
        b = self._abuf
        self._pack_ack()
        if self._ack_n >= _ACK_LOG_MAX:
            self._compact()
        else:
            f = self._ackf
            if f is None:
                f = self._ackf = open(self._log, "ab")
            try:
                f.write(b)
                f.flush()
            except OSError:
                # A partial record may be in the log: rewrite it whole next time.
                self._ack_n = _ACK_LOG_MAX
                self._ackf = None
                f.close()
                raise
            self._ack_n += 1
        self._durable = self._acked

    def _compact(self):
        # The packed record alone into acks.tmp, renamed over acks.log (atomic on LittleFS).
        if self._ackf is not None:
            self._ackf.close()
            self._ackf = None
        f = open(self._log_tmp, "wb")
        try:
            f.write(self._abuf)
            f.flush()
        finally:
            f.close()
        os.rename(self._log_tmp, self._log)
        self._ack_n = 1

    def _delete_done(self):
        # Whole segments go once the durable prefix covers them; never the newest one.
        while len(self._segs) > 1 and self._segs[0].last <= self._durable:
            self._remove_front()

    def _remove_front(self):
        s = self._segs[0]
        os.remove(s.path)
        self._segs.pop(0)
        self._used -= s.size
        self._forget(s)

    def _close_writer(self):
        if self._w is not None:
            w = self._w
            self._w = None
            w.close()

    def close(self):
        self._close_writer()
        if self._ackf is not None:
            self._ackf.close()
            self._ackf = None

    # -- open: recover the state from flash --

    def _open(self):
        _mkdirs(self.path)
        self._load_acks()
        for name in os.listdir(self.path):
            if _seg_first(name, _TMP):
                self._settle_tmp(name)
        names = [n for n in os.listdir(self.path) if _seg_first(n)]
        names.sort()  # zero-padded: name order is seq order
        for name in names:
            self._add_seg(name)
        segs = self._segs
        self._next = self._durable + 1
        if segs and segs[-1].last >= self._next:
            self._next = segs[-1].last + 1
        self._acked = self._durable
        self._advance()  # over seqs no segment holds any more (dropped, corrupt)
        self._persist_fresh()
        self._delete_done()  # all-acked and emptied segments, the newest one excepted

    def _load_acks(self):
        # The greatest valid values in acks.log and in a leftover acks.tmp. A tmp that is
        # ahead is whole: on FAT a rename removes its target first and the cut came between.
        # It becomes the log before the open's compaction overwrites acks.tmp.
        done, dropped = self._read_acks(self._log)
        tmp_done, tmp_dropped = self._read_acks(self._log_tmp)
        if tmp_done > done or tmp_dropped > dropped:
            os.rename(self._log_tmp, self._log)
        self._durable = max(0, done, tmp_done)
        self.dropped = max(0, dropped, tmp_dropped)

    def _read_acks(self, path):
        # (acked, dropped): the greatest of the valid records; -1s when there are none.
        done = dropped = -1
        b = self._abuf
        try:
            f = open(path, "rb")
        except OSError:
            return done, dropped
        try:
            while f.readinto(b) == _ACK_REC:
                if binascii.crc32(self._abuf8) == _u32(b, 8):
                    done = max(done, _u32(b, 0))
                    dropped = max(dropped, _u32(b, 4))
        finally:
            f.close()
        return done, dropped

    def _settle_tmp(self, name):
        # A repair copy next to its segment was cut short: remove it. Alone, it is whole
        # (FAT removed the segment to rename the copy over it, and the cut came between).
        tmp = _join(self.path, name)
        seg = _join(self.path, name[:10] + _EXT)
        try:
            os.stat(seg)
        except OSError:
            os.rename(tmp, seg)
            return
        os.remove(tmp)

    def _add_seg(self, name):
        first = _seg_first(name)
        path = _join(self.path, name)
        prev = self._segs[-1].last if self._segs else 0
        try:
            size = os.stat(path)[6]
            if first <= prev:
                # Overlaps the segment before it: none of it can be trusted.
                self.corrupt += 1
                os.remove(path)
                return
            last, good = self._scan(path, first, size)
        except OSError:
            return  # unreadable (a directory?): not a segment, leave it alone
        if good < size:
            try:
                self._truncate(path, good)
                size = good
            except OSError:  # a flash fault: read up to `last` only, append elsewhere
                self._remove(path[:-4] + _TMP)
                self._roll = True
        self._segs.append(_Seg(path, first, last, size))
        self._used += size

    def _scan(self, path, first, size):
        # Check every record; stop at the first bad one. Returns (last seq, good bytes).
        # A record reaching past the end of the file is a torn tail (a cut during its
        # write); any other bad record is corruption, and nothing after it is trusted.
        h = self._rhdr
        seq = first
        off = 0
        f = open(path, "rb")
        try:
            while off < size:
                left = size - off
                if left < _HDR or f.readinto(h) != _HDR:
                    self.torn += 1
                    break
                n = h[2] | (h[3] << 8)
                if h[0] != _MAGIC or h[1] != _VERSION or _u32(h, 4) != seq:
                    self.corrupt += 1
                    break
                if n > left - _HDR:
                    self.torn += 1
                    break
                if self._crc_payload(f, n) != _u32(h, 8):
                    self.corrupt += 1
                    break
                off += _HDR + n
                seq += 1
        finally:
            f.close()
        return seq - 1, off

    def _crc_payload(self, f, n):
        # crc32 of the read header and the next n bytes of f, read in chunks; -1 if short.
        crc = binascii.crc32(self._rhdr8)
        mv = self._bufmv
        while n > 0:
            k = f.readinto(mv if n >= _CHUNK else mv[:n])
            if not k:
                return -1
            crc = binascii.crc32(mv[:k], crc)
            n -= k
        return crc

    def _truncate(self, path, n):
        # No truncate() in MicroPython: copy the good prefix to NNNNNNNNNN.tmp, rename it
        # over the segment.
        tmp = path[:-4] + _TMP
        mv = self._bufmv
        src = open(path, "rb")
        try:
            dst = open(tmp, "wb")
            try:
                while n > 0:
                    k = src.readinto(mv if n >= _CHUNK else mv[:n])
                    if not k:
                        break
                    dst.write(mv[:k])
                    n -= k
                dst.flush()
            finally:
                dst.close()
        finally:
            src.close()
        os.rename(tmp, path)

    def _persist_fresh(self):
        # One clean record per open: the log never grows past a torn record.
        self._pack_ack()
        self._compact()
        self._durable = self._acked

    def _remove(self, path):
        try:
            os.remove(path)
        except OSError:
            pass
