# Fields shared by the config schema (apps.config) and the commands (apps.commands): the
# planogram of a lane and the telemetry period. Kept apart so that a running device can hold
# the commands without the whole config schema, which it drops after boot.

from micropython import const

from apps.schema import Float, Int, Str

MAX_GRAMS = 100000  # 100 kg: more than any shelf lane carries
TELEMETRY_MIN_S = const(5)
TELEMETRY_MAX_S = const(3600)

_LOWER = "abcdefghijklmnopqrstuvwxyz"
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_DIGITS = "0123456789"
SKU_CHARS = _UPPER + _LOWER + _DIGITS + "-_.:"

SKU = Str("sku", min_len=1, max_len=32, chars=SKU_CHARS, chars_desc="A-Z a-z 0-9 - _ . :")
UNIT_G = Float("unit_g", gt=0, max=MAX_GRAMS)
CAPACITY = Int("capacity", default=0, min=0, max=10000)
