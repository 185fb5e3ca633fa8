# A seeded generator for portable fuzz tests: xorshift32 gives the same sequence in CPython
# and MicroPython (their `random` modules differ).


class Rng:
    def __init__(self, seed):
        self.s = seed

    def below(self, n):
        x = self.s
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.s = x
        return x % n

    def pick(self, seq):
        return seq[self.below(len(seq))]
