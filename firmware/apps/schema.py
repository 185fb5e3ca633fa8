# A tiny declarative validator for JSON-shaped data (config.json, board.json, commands,
# events), small enough for MicroPython 1.29: no re, no typing, no dataclasses.
#
#   LANE = Dict(None,
#               Int("gain", default=128, choices=(128, 64, 32)),
#               Float("unit_g", gt=0, max=100000))
#   cleaned, errors = validate(data, LANE, "lanes[2]")
#
# Every problem becomes one line "path: what is wrong (got value)"; nothing raises on input
# of any shape. Unknown keys are errors: a typo must not silently fall back to a default.
# true/false are never numbers here (JSON keeps booleans apart; CPython's bool is an int
# subclass, MicroPython's is not, so the checks compare exact types, identical in both).
#
# Field options (keywords of the builders below):
#   default=v      absent -> v (dicts are filled in from their own fields' defaults)
#   optional=True  absent or null -> None
#   (neither)      required
#   min, max, gt, nonzero       numbers (inclusive bounds; gt is an exclusive lower bound)
#   choices=(..)                any scalar
#   min_len, max_len, chars, chars_desc   strings (chars: the allowed characters)
#   min_items, max_items, unique          lists
#   check=fn       fn(cleaned_value, path, errors): extra rules; report with add_error().
#                  On a dict it runs even when some of its fields failed (use .get()).

from micropython import const

INT = const(0)
FLOAT = const(1)
STR = const(2)
BOOL = const(3)
LIST = const(4)
DICT = const(5)
ANY = const(6)

MAX_ERRORS = const(20)  # bounded output whatever the input (a huge file of typos)
_SHOW_CHARS = const(24)
_BIG = 1000000000000000  # beyond this an integer is shown as "a huge integer"

_KIND_NAMES = ("an integer", "a number", "a string", "true or false", "a list", "an object",
               "any value")
_OPTIONS = ("default", "optional", "min", "max", "gt", "nonzero", "choices", "min_len",
            "max_len", "chars", "chars_desc", "min_items", "max_items", "unique", "check")


class _Sentinel:
    pass


MISSING = _Sentinel()  # "no default"
_BAD = _Sentinel()  # a value that failed validation


class Field:
    """One field; built with Int/Float/Str/Bool/Value/List/Dict below."""

    def __init__(self, kind, name, opts, fields=None, item=None):
        for key in opts:
            if key not in _OPTIONS:
                raise TypeError("unknown field option: " + key)  # a schema bug, at import
        self.kind = kind
        self.name = name
        self.default = opts.get("default", MISSING)
        self.optional = opts.get("optional", False)
        self.min = opts.get("min")
        self.max = opts.get("max")
        self.gt = opts.get("gt")
        self.nonzero = opts.get("nonzero", False)
        self.choices = opts.get("choices")
        self.min_len = opts.get("min_len", 0)
        self.max_len = opts.get("max_len")
        self.chars = opts.get("chars")
        self.chars_desc = opts.get("chars_desc", "the allowed characters")
        self.min_items = opts.get("min_items", 0)
        self.max_items = opts.get("max_items")
        self.unique = opts.get("unique", False)
        self.check = opts.get("check")
        self.fields = fields
        self.item = item
        self.names = None
        if fields is not None:
            names = {}
            for f in fields:
                names[f.name] = f
            self.names = names


def Int(name, **opts):
    return Field(INT, name, opts)


def Float(name, **opts):
    """A number: JSON integers are accepted and become floats."""
    return Field(FLOAT, name, opts)


def Str(name, **opts):
    return Field(STR, name, opts)


def Bool(name, **opts):
    return Field(BOOL, name, opts)


def Value(name, **opts):
    """Any JSON value (its own check, if any, decides)."""
    return Field(ANY, name, opts)


def List(name, item, **opts):
    return Field(LIST, name, opts, item=item)


def Dict(name, *fields, **opts):
    return Field(DICT, name, opts, fields=fields)


# -- reporting ---------------------------------------------------------------------------

def join(path, key):
    return path + "." + key if path else key


def add_error(errors, path, msg):
    n = len(errors)
    if n < MAX_ERRORS:
        errors.append(path + ": " + msg if path else msg)
    elif n == MAX_ERRORS:
        errors.append("(more errors not shown)")


def printable(s, limit):
    """s cut to `limit` characters, one line of ASCII: anything else becomes '?' (messages
    go to a serial console and over MQTT)."""
    out = []
    for c in s[:limit]:
        out.append(c if " " <= c <= "~" else "?")
    return "".join(out)


def show(v):
    """A value as it appears after "got" in a message: short, one line, JSON-like."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    t = type(v)
    if t is int:
        return str(v) if -_BIG < v < _BIG else "a huge integer"
    if t is float:
        if v != v:
            return "NaN"
        return "%g" % v  # same text in CPython and MicroPython, unlike repr()
    if t is str:
        more = "..." if len(v) > _SHOW_CHARS else ""
        return '"' + printable(v, _SHOW_CHARS) + more + '"'
    if t is list:
        return "a list"
    if t is dict:
        return "an object"
    return "a " + printable(t.__name__, 16)


def _num(x):
    return str(x) if type(x) is int else "%g" % x


def _got(v):
    return " (got " + show(v) + ")"


def _type_error(field, v, path, errors):
    add_error(errors, path, "must be " + _KIND_NAMES[field.kind] + _got(v))


# -- validation ----------------------------------------------------------------------------

def validate(data, schema, path=""):  # type: (object, Field, str) -> tuple
    """-> (cleaned copy with defaults filled in, [error lines]). Never raises.

    cleaned is None when `data` itself is unusable (wrong type); otherwise it holds what
    validated (a field that failed is left out), so it can be trusted only without errors.
    """
    errors = []
    try:
        value = _value(schema, data, path, errors)
    except Exception as exc:  # a bug here must not take the caller down with bad input
        add_error(errors, path, "internal validation error (" + type(exc).__name__ + ")")
        value = _BAD
    return (None if value is _BAD else value), errors


def _value(f, v, path, errors):
    kind = f.kind
    if kind == DICT:
        return _dict(f, v, path, errors)
    if kind == LIST:
        return _list(f, v, path, errors)
    t = type(v)
    if kind == INT:
        if t is not int:
            _type_error(f, v, path, errors)
            return _BAD
        if not _in_range(f, v, path, errors):
            return _BAD
    elif kind == FLOAT:
        if t is not int and t is not float:
            _type_error(f, v, path, errors)
            return _BAD
        try:
            x = float(v)
        except Exception:  # OverflowError in CPython for huge ints (MicroPython gives inf)
            x = float("inf")
        if x - x != 0:  # inf or NaN
            add_error(errors, path, "must be a finite number" + _got(v))
            return _BAD
        if not _in_range(f, x, path, errors):
            return _BAD
        v = x
    elif kind == STR:
        if t is not str:
            _type_error(f, v, path, errors)
            return _BAD
        if not _str_ok(f, v, path, errors):
            return _BAD
    elif kind == BOOL:
        if t is not bool:
            _type_error(f, v, path, errors)
            return _BAD
    if f.choices is not None and v not in f.choices:
        add_error(errors, path, "must be one of " + ", ".join([show(c) for c in f.choices])
                  + _got(v))
        return _BAD
    if f.check is not None:
        n = len(errors)
        f.check(v, path, errors)
        if len(errors) > n:
            return _BAD
    return v


def _in_range(f, v, path, errors):
    lo = f.min
    hi = f.max
    gt = f.gt
    if (lo is not None and v < lo) or (hi is not None and v > hi) or (gt is not None
                                                                      and not v > gt):
        if gt is not None:
            want = "> " + _num(gt) + (" and <= " + _num(hi) if hi is not None else "")
        elif lo is not None and hi is not None:
            want = _num(lo) + ".." + _num(hi)
        elif lo is not None:
            want = ">= " + _num(lo)
        else:
            want = "<= " + _num(hi)
        add_error(errors, path, "must be " + want + _got(v))
        return False
    if f.nonzero and v == 0:
        add_error(errors, path, "must not be 0")
        return False
    return True


def _str_ok(f, v, path, errors):
    n = len(v)
    if n < f.min_len:
        if f.min_len == 1:
            add_error(errors, path, "must not be empty")
        else:
            add_error(errors, path, "must be at least %d characters (got %d)" % (f.min_len, n))
        return False
    if f.max_len is not None and n > f.max_len:
        add_error(errors, path, "must be at most %d characters (got %d)" % (f.max_len, n))
        return False
    chars = f.chars
    if chars is not None:
        for c in v:
            if c not in chars:
                bad = "'" + c + "'" if " " <= c <= "~" else "code %d" % ord(c)
                add_error(errors, path, "must use only " + f.chars_desc + _got(v)[:-1]
                          + ": " + bad + " not allowed)")
                return False
    return True


def _default(f):
    d = f.default
    if f.kind == DICT and type(d) is dict:
        return _dict(f, d, "", [])  # fills the nested defaults in
    if type(d) is list:
        return list(d)
    return d


def _dict(f, v, path, errors):
    if type(v) is not dict:
        _type_error(f, v, path, errors)
        return _BAD
    out = {}
    for sub in f.fields:
        name = sub.name
        p = join(path, name)
        if name in v:
            x = v[name]
            if x is None and sub.optional:
                out[name] = None
                continue
            r = _value(sub, x, p, errors)
            if r is not _BAD:
                out[name] = r
        elif sub.default is not MISSING:
            out[name] = _default(sub)
        elif sub.optional:
            out[name] = None
        else:
            add_error(errors, p, "required")
    names = f.names
    unknown = [printable(str(k), 32) for k in v if k not in names]
    if unknown:
        unknown.sort()  # MicroPython dicts are unordered: keep the messages deterministic
        for k in unknown:
            add_error(errors, join(path, k), "unknown key" + _suggest(k, f.fields))
    if f.check is not None:
        f.check(out, path, errors)
    return out


def _list(f, v, path, errors):
    if type(v) is not list:
        _type_error(f, v, path, errors)
        return _BAD
    n = len(v)
    lo = f.min_items
    hi = f.max_items
    if n < lo or (hi is not None and n > hi):
        if hi is None:
            want = "at least %d" % lo
        elif lo == hi:
            want = "exactly %d" % lo
        else:
            want = "%d..%d" % (lo, hi)
        add_error(errors, path, "must have %s items (got %d)" % (want, n))
        return _BAD
    out = []
    item = f.item
    for i in range(n):
        r = _value(item, v[i], path + "[" + str(i) + "]", errors)
        out.append(None if r is _BAD else r)  # None keeps the indices of the others
    if f.unique:
        for i in range(1, n):
            x = out[i]
            if x is None:
                continue
            for j in range(i):
                if out[j] == x and type(out[j]) is type(x):
                    add_error(errors, path + "[" + str(i) + "]",
                              "duplicate of " + path + "[" + str(j) + "]" + _got(x))
                    break
    if f.check is not None:
        f.check(out, path, errors)
    return out


# -- "did you mean" for unknown keys -------------------------------------------------------

def _distance(a, b):
    # Levenshtein distance; only called on the error path, for short keys.
    prev = list(range(len(b) + 1))
    for i in range(len(a)):
        cur = [i + 1]
        ca = a[i]
        for j in range(len(b)):
            cost = 0 if ca == b[j] else 1
            cur.append(min(prev[j + 1] + 1, cur[j] + 1, prev[j] + cost))
        prev = cur
    return prev[-1]


def _suggest(key, fields):
    if len(key) > 32:
        return ""
    best = None
    best_d = min(3, len(key) - 1)  # at most 2 edits, fewer for short keys ("x" is not "v")
    for f in fields:
        name = f.name
        if type(name) is not str or abs(len(name) - len(key)) >= best_d:
            continue
        d = _distance(key, name)
        if d < best_d:
            best = name
            best_d = d
    return " (did you mean \"" + best + "\"?)" if best is not None else ""
