# Runs portable test functions inside the MicroPython VM (this file is MicroPython code: it is
# sent to the VM as the main script by host_tools.vm.fwtests; CPython never runs it).
#
# sys.argv[1] is JSON: {"path": [dirs to append to sys.path],
#                       "modules": [{"module": "test_x", "tests": ["test_a", ...]}, ...]}
# Output: ordinary test output, plus one line per event, "@@vmtest " + JSON:
#   {"event": "import", "module": m, "ok": true|false, "detail": traceback}
#   {"event": "start", "module": m, "test": t}
#   {"event": "result", "module": m, "test": t, "status": "pass"|"fail"|"skip", "detail": s,
#    "ms": elapsed milliseconds, "alloc": gc.mem_alloc() after the test and a collection}
# A test is skipped only when it raises an exception whose class (or a base class) is named
# SkipTest; anything else raised is a failure, reported with its MicroPython traceback.
import gc
import io
import json
import sys
import time

MARK = "@@vmtest "


def report(**fields):
    print(MARK + json.dumps(fields))


def traceback_text(exc):
    buf = io.StringIO()
    sys.print_exception(exc, buf)
    return buf.getvalue()


def is_skip(exc):
    todo = [type(exc)]
    while todo:
        cls = todo.pop()
        if cls.__name__ == "SkipTest":
            return True
        todo.extend(getattr(cls, "__bases__", ()))
    return False


def run_module(name, tests):
    try:
        mod = __import__(name)
    except BaseException as exc:  # noqa: B036 - report everything, the host decides
        report(event="import", module=name, ok=False, detail=traceback_text(exc))
        return
    report(event="import", module=name, ok=True, detail="")
    for test in tests:
        report(event="start", module=name, test=test)
        fn = getattr(mod, test, None)
        t0 = time.ticks_ms()
        if fn is None:
            status, detail = "fail", f"{name} has no attribute {test} in the VM"
        else:
            try:
                fn()
                status, detail = "pass", ""
            except BaseException as exc:  # noqa: B036
                if is_skip(exc):
                    status, detail = "skip", str(exc)
                else:
                    status, detail = "fail", traceback_text(exc)
        ms = time.ticks_diff(time.ticks_ms(), t0)
        gc.collect()
        report(event="result", module=name, test=test, status=status, detail=detail, ms=ms,
               alloc=gc.mem_alloc())


def main():
    cfg = json.loads(sys.argv[1])
    for d in cfg.get("path", ()):
        if d not in sys.path:
            sys.path.append(d)
    for entry in cfg["modules"]:
        run_module(entry["module"], entry["tests"])
    report(event="done")


main()
