"""A fake `network` module: one WiFi station whose link the test controls.

`WLAN(STA_IF)` returns the one station. connect() starts a join that completes after
`join_ms` (of the fake board's clock) when the access point is up; `fake_ap(up=False)` takes
the access point away (the link drops at once), `fake_ap(up=True, rssi=-61)` brings it back.
status() gives the ESP32's codes; status('rssi') the signal while joined.
"""

import machine

STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202


class _Station:
    def __init__(self):
        self.ap_up = True
        self.ssid = "store-wifi"
        self.password = "store-secret"
        self.rssi = -58
        self.join_ms = 300
        self.joins = 0
        self._active = False
        self._joining_since = None
        self._joined = False
        self._want = None

    def _now_ms(self):
        return machine.fake_clock().now // 1000

    def _update(self):
        if self._joined and not self.ap_up:
            self._joined = False
            self._joining_since = self._now_ms() if self._want else None
        if self._joining_since is not None and self.ap_up and self._want == (
                self.ssid, self.password):
            if self._now_ms() - self._joining_since >= self.join_ms:
                self._joined = True
                self._joining_since = None
                self.joins += 1


_station = _Station()


def fake_station():
    return _station


def fake_ap(up=True, rssi=None, ssid=None, password=None):
    st = _station
    st.ap_up = up
    if rssi is not None:
        st.rssi = rssi
    if ssid is not None:
        st.ssid = ssid
    if password is not None:
        st.password = password
    st._update()


def fake_reset_network():
    global _station
    _station = _Station()


class WLAN:
    def __init__(self, interface=STA_IF):
        if interface != STA_IF:
            raise ValueError("only the station interface is faked")
        self._st = _station

    def active(self, on=None):
        if on is None:
            return self._st._active
        self._st._active = bool(on)
        if not on:
            self._st._joined = False
        return None

    def connect(self, ssid=None, key=None):
        st = self._st
        if not st._active:
            raise OSError("Wifi Not Started")
        st._want = (ssid, key)
        st._joined = False
        st._joining_since = st._now_ms()

    def disconnect(self):
        st = self._st
        st._want = None
        st._joined = False
        st._joining_since = None

    def isconnected(self):
        self._st._update()
        return self._st._joined

    def status(self, param=None):
        st = self._st
        st._update()
        if param == "rssi":
            if not st._joined:
                raise OSError("not connected")
            return st.rssi
        if param is not None:
            raise ValueError("unknown status param")
        if st._joined:
            return STAT_GOT_IP
        if st._joining_since is not None:
            if st._want is not None and st.ap_up and st._want[0] == st.ssid and (
                    st._want[1] != st.password):
                return STAT_WRONG_PASSWORD
            return STAT_CONNECTING if st.ap_up else STAT_NO_AP_FOUND
        return STAT_IDLE

    def ifconfig(self):
        return ("10.0.0.23", "255.255.255.0", "10.0.0.1", "10.0.0.1")

    def config(self, name):
        if name == "mac":
            return machine.unique_id()
        raise ValueError("unknown config param")
