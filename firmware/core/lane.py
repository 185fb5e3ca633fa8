# Lane calibration and planogram: what one load cell's counts mean.
#
# grams = (raw - offset) / counts_per_gram. counts_per_gram is signed (a load cell wired the
# other way round gives falling counts for rising weight). Everything the per-sample path needs
# is derived here once as integers, so sensing never touches floats (on the ESP32 every float
# result is a heap allocation; integers below 2**30 are not).


class CalibrationError(ValueError):
    pass


def _round_div(num, den):
    # Integer division rounded half away from zero; den > 0.
    if num >= 0:
        return (num + den // 2) // den
    return -((-num + den // 2) // den)


class LaneCal:
    def __init__(self, offset=0, counts_per_gram=1.0, unit_g=0.0, sku="", capacity=0):
        if counts_per_gram == 0:
            raise CalibrationError("counts_per_gram must not be 0")
        if unit_g < 0:
            raise CalibrationError("unit_g must be >= 0")
        if capacity < 0:
            raise CalibrationError("capacity must be >= 0")
        self.offset = int(offset)
        self.counts_per_gram = float(counts_per_gram)
        self.unit_g = float(unit_g)
        self.sku = sku
        self.capacity = int(capacity)
        self._derive()

    def _derive(self):
        cpg = self.counts_per_gram
        # counts per 1000 g as an int: 3+ significant digits of headroom for any real cell.
        self.counts_per_kg = int(round(cpg * 1000))
        if self.counts_per_kg == 0:
            raise CalibrationError("counts_per_gram too small")
        self.unit_counts = int(round(abs(self.unit_g * cpg)))

    def counts_from_g(self, grams):
        """Magnitude of `grams` in counts (for thresholds; config time only)."""
        return int(round(abs(grams * self.counts_per_gram)))

    def cg(self, counts):
        """Centigrams for a change of `counts` (signed), rounded; integer maths only."""
        cpk = self.counts_per_kg
        if cpk < 0:
            return _round_div(-counts * 100000, -cpk)
        return _round_div(counts * 100000, cpk)

    def load_cg(self, level):
        """Centigrams on the lane for an absolute reading `level` (raw counts)."""
        return self.cg(level - self.offset)

    def grams(self, raw):
        return (raw - self.offset) / self.counts_per_gram

    # Calibration from averaged readings (the caller averages; a still lane is its job).
    def tare(self, empty_raw):
        self.offset = int(round(empty_raw))

    def span(self, loaded_raw, known_g):
        if known_g <= 0:
            raise CalibrationError("known weight must be > 0 g")
        counts = loaded_raw - self.offset
        if abs(counts) < 50:
            raise CalibrationError("no change from tare: is the weight on the lane?")
        self.counts_per_gram = counts / known_g
        self._derive()

    def set_planogram(self, sku, unit_g, capacity=0):
        if unit_g <= 0:
            raise CalibrationError("unit_g must be > 0")
        if capacity < 0:
            raise CalibrationError("capacity must be >= 0")
        self.sku = sku
        self.unit_g = float(unit_g)
        self.capacity = int(capacity)
        self._derive()

    def to_dict(self):
        return {
            "offset": self.offset,
            "counts_per_gram": self.counts_per_gram,
            "unit_g": self.unit_g,
            "sku": self.sku,
            "capacity": self.capacity,
        }

    @classmethod
    def from_dict(cls, d):
        return cls(
            d.get("offset", 0),
            d.get("counts_per_gram", 1.0),
            d.get("unit_g", 0.0),
            d.get("sku", ""),
            d.get("capacity", 0),
        )
