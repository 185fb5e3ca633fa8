#!/usr/bin/env node
// Run Python code in the real MicroPython 1.29 VM (the project's pinned WebAssembly port).
//
//   node host_tools/vm/mpvm.mjs [options] [SCRIPT.py [ARG...]]
//
// Options (repeatable where it makes sense; a JSON spec and the command line add up):
//   --heap SIZE          GC heap given to the VM: bytes, or with a k/m suffix (default 192k).
//                        The port grows its heap beyond this on demand: it is NOT a limit.
//   --mount HOST:VMDIR   copy a host directory tree into the VM's filesystem at VMDIR
//                        (e.g. firmware:/  host_tools/sim/hw:/lib); a file works too.
//   --file HOST:VMPATH   copy one host file to VMPATH (large inputs: one read, one copy).
//   --cwd VMDIR          working directory for the script (default /, as on a board).
//   --path VMDIR         append VMDIR to sys.path (default sys.path: '', '.frozen', '/lib').
//   --name NAME          file name the script's tracebacks show (default: SCRIPT's base name).
//   -c CODE              run CODE instead of SCRIPT.
//   --async              run with runPythonAsync: top-level `await` is allowed.
//   --spec FILE|-        read a JSON spec (below) from FILE or stdin.
//   --timing             print load/filesystem/run milliseconds to stderr at the end.
//
// JSON spec: {"heap": 196608 | "192k", "cwd": "/", "name": "main.py", "async": false,
//   "code": "...", "script": "/host/path.py", "argv": ["..."], "path": ["/extra"],
//   "mounts": [{"host": "/host/dir", "vm": "/"}],
//   "files": [{"vm": "/x", "host": "/host/file"} | {"vm": "/x", "text": "..."}
//             | {"vm": "/x", "base64": "..."}]}
//
// stdout/stderr of the VM are written line by line as they come. Exit status: 0 when the script
// ends normally; the SystemExit code for sys.exit(n); 1 when it raises (the MicroPython
// traceback goes to stderr); 2 for a usage error; 3 when the VM cannot be loaded or set up.

import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const PACKAGE = "@micropython/micropython-webassembly-pyscript";
const DEFAULT_HEAP = 192 * 1024;
// Host files and directories never copied into the VM.
const SKIP_NAMES = new Set(["__pycache__", ".git", ".pytest_cache", ".ruff_cache", ".mypy_cache"]);
const SKIP_SUFFIXES = [".pyc"];

class UsageError extends Error {}
class SetupError extends Error {}

function parseSize(value) {
  if (typeof value === "number") return Math.floor(value);
  const m = /^\s*(\d+)\s*([kKmM]?)\s*$/.exec(String(value));
  if (!m) throw new UsageError(`bad heap size: ${value}`);
  const mult = { "": 1, k: 1024, m: 1024 * 1024 }[m[2].toLowerCase()];
  return parseInt(m[1], 10) * mult;
}

// "HOST:/vm/path": the VM side always starts with '/', so split at the last ":/".
function splitPair(arg, option) {
  const i = arg.lastIndexOf(":/");
  if (i <= 0) throw new UsageError(`${option} wants HOST:/VMPATH, got ${arg}`);
  return { host: arg.slice(0, i), vm: arg.slice(i + 1) };
}

function emptySpec() {
  return { mounts: [], files: [], argv: [], path: [] };
}

function mergeSpec(into, spec) {
  for (const key of ["mounts", "files", "argv", "path"]) {
    if (spec[key] !== undefined) {
      if (!Array.isArray(spec[key])) throw new UsageError(`spec.${key} must be a list`);
      into[key].push(...spec[key]);
    }
  }
  for (const key of ["heap", "cwd", "name", "code", "script", "async", "timing"]) {
    if (spec[key] !== undefined) into[key] = spec[key];
  }
  return into;
}

function parseArgs(argv) {
  const spec = emptySpec();
  let i = 0;
  const need = (opt) => {
    if (i + 1 >= argv.length) throw new UsageError(`${opt} needs a value`);
    return argv[++i];
  };
  for (; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--heap") spec.heap = need(a);
    else if (a === "--mount") spec.mounts.push(splitPair(need(a), a));
    else if (a === "--file") spec.files.push(splitPair(need(a), a));
    else if (a === "--cwd") spec.cwd = need(a);
    else if (a === "--path") spec.path.push(need(a));
    else if (a === "--name") spec.name = need(a);
    else if (a === "-c") spec.code = need(a);
    else if (a === "--async") spec.async = true;
    else if (a === "--timing") spec.timing = true;
    else if (a === "--spec") {
      const src = need(a);
      const text = fs.readFileSync(src === "-" ? 0 : src, "utf8");
      let parsed;
      try {
        parsed = JSON.parse(text);
      } catch (e) {
        throw new UsageError(`bad JSON spec: ${e.message}`);
      }
      mergeSpec(spec, parsed);
    } else if (a === "-h" || a === "--help") {
      spec.help = true;
    } else if (a === "--") {
      i++;
      break;
    } else if (a.startsWith("-") && a !== "-") {
      throw new UsageError(`unknown option ${a}`);
    } else break;
  }
  const rest = argv.slice(i);
  if (spec.code === undefined && spec.script === undefined && rest.length) {
    spec.script = rest.shift();
  }
  spec.argv.push(...rest);
  return spec;
}

function usage() {
  const text = fs.readFileSync(fileURLToPath(import.meta.url), "utf8").split("\n");
  const lines = [];
  for (const line of text.slice(1)) {
    if (!line.startsWith("//")) break;
    lines.push(line.replace(/^\/\/ ?/, ""));
  }
  return lines.join("\n") + "\n";
}

// The pinned package: $MPVM_PACKAGE (its directory or micropython.mjs), else node's resolution
// from this file's directory upwards (the repo's node_modules), whatever the current directory.
function resolvePackage() {
  const override = process.env.MPVM_PACKAGE;
  if (override) {
    const p = fs.statSync(override, { throwIfNoEntry: false })?.isDirectory()
      ? path.join(override, "micropython.mjs")
      : override;
    if (!fs.existsSync(p)) throw new SetupError(`MPVM_PACKAGE=${override}: no micropython.mjs`);
    return p;
  }
  try {
    return createRequire(import.meta.url).resolve(PACKAGE);
  } catch {
    throw new SetupError(`${PACKAGE} is not installed (no node_modules): run make setup`);
  }
}

// ---- output: VM bytes -> our stdout/stderr, line by line, partial last lines included ----

function sink(stream) {
  return (line) => stream.write(line + "\n");
}

function flushPartial(mod, key, stream) {
  const buf = mod[key];
  if (Array.isArray(buf) && buf.length) {
    stream.write(Buffer.from(buf));
    mod[key] = [];
  }
}

// ---- filesystem ----

function vmMkdirs(FS, dir) {
  if (dir && dir !== "/") FS.mkdirTree(dir);
}

function copyFile(FS, host, vm) {
  let data;
  try {
    data = fs.readFileSync(host);
  } catch (e) {
    throw new SetupError(`cannot read ${host}: ${e.code || e.message}`);
  }
  vmMkdirs(FS, path.posix.dirname(vm));
  // canOwn: MEMFS keeps this buffer instead of copying it once more.
  FS.writeFile(vm, data, { canOwn: true });
  return data.length;
}

function skipped(name) {
  return SKIP_NAMES.has(name) || SKIP_SUFFIXES.some((s) => name.endsWith(s));
}

function copyTree(FS, host, vm) {
  const st = fs.statSync(host, { throwIfNoEntry: false });
  if (!st) throw new SetupError(`mount source does not exist: ${host}`);
  if (!st.isDirectory()) return copyFile(FS, host, vm);
  vmMkdirs(FS, vm);
  let total = 0;
  for (const entry of fs.readdirSync(host, { withFileTypes: true })) {
    if (skipped(entry.name)) continue;
    const h = path.join(host, entry.name);
    const v = path.posix.join(vm, entry.name);
    const isDir = entry.isDirectory() || (entry.isSymbolicLink() && fs.statSync(h).isDirectory());
    total += isDir ? copyTree(FS, h, v) : copyFile(FS, h, v);
  }
  return total;
}

function buildFilesystem(FS, spec) {
  let total = 0;
  for (const m of spec.mounts) {
    if (!m || typeof m.host !== "string" || typeof m.vm !== "string") {
      throw new UsageError(`bad mount entry: ${JSON.stringify(m)}`);
    }
    total += copyTree(FS, m.host, m.vm);
  }
  for (const f of spec.files) {
    if (!f || typeof f.vm !== "string" || !f.vm.startsWith("/")) {
      throw new UsageError(`bad file entry (vm must be an absolute path): ${JSON.stringify(f)}`);
    }
    if (typeof f.host === "string") {
      total += copyFile(FS, f.host, f.vm);
      continue;
    }
    let data;
    if (typeof f.text === "string") data = Buffer.from(f.text, "utf8");
    else if (typeof f.base64 === "string") data = Buffer.from(f.base64, "base64");
    else throw new UsageError(`file entry needs host, text or base64: ${f.vm}`);
    vmMkdirs(FS, path.posix.dirname(f.vm));
    FS.writeFile(f.vm, data, { canOwn: true });
    total += data.length;
  }
  return total;
}

// ---- errors ----

// The bootstrap line that exec()s the script shows up as a first "<stdin>" frame: drop it.
function cleanTraceback(message) {
  const lines = message.replace(/\n+$/, "").split("\n");
  if (lines[0].startsWith("Traceback") && /^ {2}File "<stdin>", line 1, in <module>$/.test(lines[1])) {
    lines.splice(1, 1);
  }
  return lines.join("\n") + "\n";
}

// SystemExit -> process exit status, as CPython does it.
function exitStatus(err, stderr) {
  const last = err.message.replace(/\n+$/, "").split("\n").pop();
  const m = /^SystemExit:?\s?(.*)$/.exec(last);
  const arg = m ? m[1] : "";
  if (arg === "" || arg === "None") return 0;
  if (/^-?\d+$/.test(arg)) return parseInt(arg, 10) & 0xff;
  stderr.write(arg + "\n");
  return 1;
}

const BOOTSTRAP =
  "exec(compile(__mpvm_src, __mpvm_name, 'exec'), {'__name__': '__main__', '__file__': __mpvm_name})";

async function main() {
  const t0 = performance.now();
  const spec = parseArgs(process.argv.slice(2));
  if (spec.help) {
    process.stdout.write(usage());
    return 0;
  }
  let code = spec.code;
  let name = spec.name;
  if (code === undefined) {
    if (spec.script === undefined) throw new UsageError("nothing to run: give SCRIPT, -c CODE or a spec");
    try {
      code = fs.readFileSync(spec.script === "-" ? 0 : spec.script, "utf8");
    } catch (e) {
      throw new UsageError(`cannot read script ${spec.script}: ${e.code || e.message}`);
    }
    name ??= spec.script === "-" ? "<stdin>" : path.basename(spec.script);
  }
  name ??= "<string>";
  const heap = parseSize(spec.heap ?? DEFAULT_HEAP);

  const pkg = resolvePackage();
  const { loadMicroPython } = await import(pathToFileURL(pkg).href);
  const mp = await loadMicroPython({
    heapsize: heap,
    linebuffer: true,
    stdout: sink(process.stdout),
    stderr: sink(process.stderr),
  });
  const mod = mp._module;
  const t1 = performance.now();
  const bytes = buildFilesystem(mp.FS, spec);
  const t2 = performance.now();
  if (spec.cwd && spec.cwd !== "/") {
    let isDir = false;
    try {
      isDir = mp.FS.isDir(mp.FS.stat(spec.cwd).mode);
    } catch {}
    if (!isDir) throw new UsageError(`--cwd ${spec.cwd}: no such directory in the VM`);
  }

  let status = 0;
  try {
    const setup = ["import sys, os"];
    if (spec.cwd && spec.cwd !== "/") setup.push(`os.chdir(${JSON.stringify(spec.cwd)})`);
    for (const p of spec.path) setup.push(`sys.path.append(${JSON.stringify(p)})`);
    setup.push(`sys.argv.append(${JSON.stringify(name)})`);
    for (const a of spec.argv) setup.push(`sys.argv.append(${JSON.stringify(String(a))})`);
    setup.push("del sys, os");
    mp.runPython(setup.join("\n"));
    if (spec.async) {
      await mp.runPythonAsync(code);
    } else {
      mp.globals.set("__mpvm_src", code);
      mp.globals.set("__mpvm_name", name);
      mp.runPython(BOOTSTRAP);
    }
  } catch (err) {
    flushPartial(mod, "_stdoutBuffer", process.stdout);
    flushPartial(mod, "_stderrBuffer", process.stderr);
    if (err?.constructor?.name !== "PythonError") throw err;
    if (err.type === "SystemExit") status = exitStatus(err, process.stderr);
    else {
      // Only the synchronous path adds the bootstrap frame.
      process.stderr.write(spec.async ? err.message.replace(/\n*$/, "\n") : cleanTraceback(err.message));
      status = 1;
    }
  }
  flushPartial(mod, "_stdoutBuffer", process.stdout);
  flushPartial(mod, "_stderrBuffer", process.stderr);
  if (spec.timing) {
    const t3 = performance.now();
    const ms = (a, b) => (b - a).toFixed(1);
    process.stderr.write(
      `mpvm: load ${ms(t0, t1)} ms, filesystem ${ms(t1, t2)} ms (${bytes} bytes), ` +
        `run ${ms(t2, t3)} ms\n`,
    );
  }
  return status;
}

function finish(status) {
  // Pipes are written synchronously on POSIX; exit now even if Python left JS timers behind.
  process.exitCode = status;
  process.stdout.write("", () => process.exit(status));
}

main().then(finish, (err) => {
  if (err instanceof UsageError) {
    process.stderr.write(`mpvm: ${err.message}\n`);
    finish(2);
  } else {
    const what = err instanceof SetupError ? err.message : `VM failure: ${err?.stack || err}`;
    process.stderr.write(`mpvm: ${what}\n`);
    finish(3);
  }
});
