# Fields shared by the config schema (apps.config) and the commands (apps.commands): a lane's
# calibration and planogram, and the telemetry period. Kept apart so that a running device
# can hold the commands without the whole config schema, which it drops after boot.

from micropython import const

from apps.schema import Float, Int, Str, add_error, show

MAX_GRAMS = 100000  # 100 kg: more than any shelf lane carries
TELEMETRY_MIN_S = const(5)
TELEMETRY_MAX_S = const(3600)
RAW_MIN = const(-8388608)  # HX711 conversions are 24-bit two's complement
RAW_MAX = const(8388607)
MAX_CPG = 1000000  # counts per gram, in magnitude

_LOWER = "abcdefghijklmnopqrstuvwxyz"
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_DIGITS = "0123456789"
SKU_CHARS = _UPPER + _LOWER + _DIGITS + "-_.:"

SKU = Str("sku", min_len=1, max_len=32, chars=SKU_CHARS, chars_desc="A-Z a-z 0-9 - _ . :")
UNIT_G = Float("unit_g", gt=0, max=MAX_GRAMS)
CAPACITY = Int("capacity", default=0, min=0, max=10000)


def _cpg_check(v, path, errors):
    if abs(v) < 0.001:  # LaneCal keeps counts per kg as an int: it must not round to 0
        add_error(errors, path, "must be at least 0.001 in magnitude" + " (got " + show(v) + ")")


# A lane's calibration (core.lane.LaneCal): config.json gives the offset a default, the
# calibrate command makes both optional (it also takes grams instead), hence builders.
def offset_field(**opts):
    return Int("offset", min=RAW_MIN, max=RAW_MAX, **opts)


def counts_per_gram_field(**opts):
    return Float("counts_per_gram", nonzero=True, min=-MAX_CPG, max=MAX_CPG, check=_cpg_check,
                 **opts)
