#!/usr/bin/env node
// One power-on of a virtual board: the MicroPython 1.29 WebAssembly VM, its REPL on this
// process's stdin/stdout (the serial line, bytes as a board sends them), its flash mirrored to
// a host directory. host_tools/sim/board.py runs one of these per boot and speaks the serial
// protocol details (raw-paste, soft reboot, pacing) in front of it.
//
//   node vboard.mjs --flash DIR --sim DIR [--mode power|raw] [--heap BYTES]
//
// --flash DIR  the board's filesystem: copied to the VM's / at start; every write, rename,
//              remove and mkdir the board makes is written through to DIR at once (a power
//              cut, i.e. killing this process, loses nothing the board had written).
// --sim DIR    the hardware stand-ins (machine, network, ...; repeatable): copied to /_sim,
//              on sys.path, never written back (they are the board, not its flash). Its
//              _simboot.py runs first at every boot (errno numbers and the root listing as
//              on a board).
// --mode power run boot.py then main.py (power-on, soft reboot from the friendly REPL);
//        raw   run boot.py, then enter the raw REPL (soft reboot from the raw REPL);
//        nomain run boot.py, then the friendly REPL (main.py interrupted: see board.py).
//
// stdin bytes go to the REPL one after another (two feeders garble it). A Ctrl-C while code
// runs raises KeyboardInterrupt in it; a Ctrl-C while the application runs in the background
// (the WebAssembly port has no blocking asyncio.run: apps.device runs as a task) stops it
// first, as a Ctrl-C stops main.py on a board. Output: "\n" becomes "\r\n" as a board's
// cooked stdout does.

import fs from "node:fs";
import net from "node:net";
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";

const PACKAGE = "@micropython/micropython-webassembly-pyscript";
const NOT_FLASH = ["/_sim", "/tmp", "/dev", "/proc", "/home"];

function parse(argv) {
  const opt = { mode: "power", heap: 192 * 1024 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--flash") opt.flash = argv[++i];
    else if (a === "--sim") (opt.sim = opt.sim || []).push(argv[++i]);
    else if (a === "--mode") opt.mode = argv[++i];
    else if (a === "--heap") opt.heap = parseInt(argv[++i], 10);
    else if (a === "--shelf") opt.shelf = argv[++i];
    else if (a === "--physics") opt.physics = true;
    else if (a === "--control-fd") opt.controlFd = parseInt(argv[++i], 10);
    else if (a === "--status-fd") opt.statusFd = parseInt(argv[++i], 10);
    else throw new Error(`unknown option ${a}`);
  }
  if (!opt.flash || !opt.sim) throw new Error("--flash and --sim are required");
  return opt;
}

// ---- serial output: cooked like a board's stdout ----
let lastOut = 0;
function serialWrite(bytes) {
  const out = [];
  for (const b of bytes) {
    if (b === 10 && lastOut !== 13) out.push(13);
    out.push(b);
    lastOut = b;
  }
  process.stdout.write(Buffer.from(out));
}
let quiet = false; // output swallowed while the REPL is set up behind the scenes

// ---- flash: host dir <-> VM, written through ----
function loadTree(FS, host, vm) {
  for (const e of fs.readdirSync(host, { withFileTypes: true })) {
    if (e.name === "serial" || e.name.startsWith(".sim")) continue; // the sim's own files
    const h = path.join(host, e.name);
    const v = path.posix.join(vm, e.name);
    if (e.isDirectory()) {
      FS.mkdirTree(v);
      loadTree(FS, h, v);
    } else if (e.isFile()) {
      FS.writeFile(v, fs.readFileSync(h));
    }
  }
}

function hostPath(flash, vmPath) {
  if (!vmPath || !vmPath.startsWith("/")) return null;
  for (const p of NOT_FLASH) if (vmPath === p || vmPath.startsWith(p + "/")) return null;
  return path.join(flash, vmPath);
}

function mirror(FS, flash) {
  const sync = (vmPath) => {
    const h = hostPath(flash, vmPath);
    if (!h) return;
    try {
      const st = FS.stat(vmPath);
      if (FS.isDir(st.mode)) fs.mkdirSync(h, { recursive: true });
      else {
        fs.mkdirSync(path.dirname(h), { recursive: true });
        fs.writeFileSync(h, FS.readFile(vmPath));
      }
    } catch {
      /* gone already */
    }
  };
  const wrap = (name, after) => {
    const orig = FS[name];
    FS[name] = function (...args) {
      const r = orig.apply(this, args);
      try {
        after(args, r);
      } catch {
        /* mirroring must never break the board */
      }
      return r;
    };
  };
  wrap("write", (args) => sync(args[0].path));
  wrap("open", (args, stream) => {
    if (stream && stream.path && typeof args[1] !== "undefined") {
      const flags = typeof args[1] === "string" ? args[1] : args[1];
      const writes = typeof flags === "string" ? /[wa+]/.test(flags) : (flags & 3) !== 0;
      if (writes) sync(stream.path);
    }
  });
  wrap("rename", (args) => {
    const a = hostPath(flash, args[0]);
    const b = hostPath(flash, args[1]);
    if (a && b && fs.existsSync(a)) fs.renameSync(a, b);
    else sync(args[1]);
  });
  wrap("unlink", (args) => {
    const h = hostPath(flash, args[0]);
    if (h) fs.rmSync(h, { force: true });
  });
  wrap("rmdir", (args) => {
    const h = hostPath(flash, args[0]);
    if (h) fs.rmSync(h, { recursive: true, force: true });
  });
  wrap("mkdir", (args) => sync(args[0]));
}

// ---- TCP for the board's firmware: the VM has no sockets; _simboot.py builds
// asyncio.open_connection on these (data crosses as hex strings, simple and exact) ----
function simnet() {
  const socks = new Map();
  let next = 1;
  return {
    connect(host, port) {
      return new Promise((resolve, reject) => {
        const s = net.connect({ host, port });
        const id = next++;
        const st = { s, chunks: [], ended: false, waiter: null, error: null };
        const wake = () => {
          if (st.waiter) {
            const w = st.waiter;
            st.waiter = null;
            w();
          }
        };
        s.on("data", (d) => {
          st.chunks.push(d);
          wake();
        });
        s.on("end", () => {
          st.ended = true;
          wake();
        });
        s.on("close", () => {
          st.ended = true;
          wake();
        });
        s.on("error", (e) => {
          st.error = e.code || e.message;
          st.ended = true;
          wake();
          reject(new Error(st.error));
        });
        s.once("connect", () => {
          socks.set(id, st);
          resolve(id);
        });
      });
    },
    read(id, n) {
      const st = socks.get(id);
      if (!st) return Promise.resolve("");
      const take = () => {
        const all = Buffer.concat(st.chunks);
        const out = all.subarray(0, n);
        st.chunks = all.length > n ? [all.subarray(n)] : [];
        return out.toString("hex");
      };
      if (st.chunks.length) return Promise.resolve(take());
      if (st.ended) return Promise.resolve("");
      return new Promise((resolve) => {
        st.waiter = () => resolve(st.chunks.length ? take() : "");
      });
    },
    write(id, hex) {
      const st = socks.get(id);
      if (!st || st.ended) return false;
      st.s.write(Buffer.from(hex, "hex"));
      return true;
    },
    close(id) {
      const st = socks.get(id);
      if (st) {
        st.s.destroy();
        st.ended = true;
        socks.delete(id);
        if (st.waiter) st.waiter();
      }
    },
  };
}

// ---- the host's hands on the hardware: commands (JSON lines) arrive on --control-fd and
// wait in a queue that _simhw.py takes from; reset() ends this boot with status 75, which the
// front answers with a power-on boot ----
// Readings streamed by the host's physics (host_tools/sim/physics_feed.py) wait per lane as
// [wall ms, raw] pairs; sample(lane) gives the one current now.
function simctl(opt) {
  const queue = [];
  const samples = new Map();
  const take = (line) => {
    if (line.startsWith('{"cmd": "samples"')) {
      const m = JSON.parse(line);
      const buf = samples.get(m.lane) || [];
      for (let k = 0; k < m.t.length; k++) buf.push([m.t[k], m.raw[k]]);
      samples.set(m.lane, buf);
    } else queue.push(line);
  };
  if (opt.controlFd) {
    let rest = "";
    fs.createReadStream(null, { fd: opt.controlFd }).on("data", (d) => {
      rest += d.toString();
      let i;
      while ((i = rest.indexOf("\n")) >= 0) {
        take(rest.slice(0, i));
        rest = rest.slice(i + 1);
      }
    });
  }
  return {
    take: () => (queue.length ? queue.shift() : ""),
    report: (line) => {
      if (opt.statusFd) fs.writeSync(opt.statusFd, line + "\n");
    },
    sample: (lane) => {
      const buf = samples.get(lane);
      if (!buf || !buf.length) return null;
      const now = Date.now();
      while (buf.length > 1 && buf[1][0] <= now) buf.shift();
      return buf[0][1];
    },
    start: () =>
      JSON.stringify({ grams: JSON.parse(opt.shelf || "[]"), physics: !!opt.physics }),
    // The chip's reset line: nothing more comes out, and the front (which owns the power)
    // restarts the board. Not process.exit() here: called from code typed at the REPL, it can
    // hang in Node's exit while a thread still reads the control pipe.
    reset: () => {
      quiet = true;
      report({ reset: true });
    },
  };
}

// ---- running files as the board does at boot ----
async function runFile(mp, FS, name) {
  try {
    FS.stat("/" + name);
  } catch {
    return;
  }
  const code = new TextDecoder().decode(FS.readFile("/" + name));
  try {
    await mp.runPythonAsync(code);
  } catch (err) {
    const text = String(err.message || err).replace(/File "<stdin>"/g, `File "${name}"`);
    serialWrite(Buffer.from(text.endsWith("\n") ? text : text + "\n"));
  }
}

let report = () => {};

async function main() {
  const opt = parse(process.argv.slice(2));
  if (opt.statusFd) report = (obj) => fs.writeSync(opt.statusFd, JSON.stringify(obj) + "\n");
  const pkg = createRequire(import.meta.url).resolve(PACKAGE);
  const { loadMicroPython } = await import(pathToFileURL(pkg).href);
  const mp = await loadMicroPython({
    heapsize: opt.heap,
    linebuffer: false,
    stdout: (b) => quiet || serialWrite(b),
    stderr: (b) => quiet || serialWrite(b),
  });
  mp.registerJsModule("_simnet", simnet());
  mp.registerJsModule("_simctl", simctl(opt));
  const FS = mp.FS;
  fs.mkdirSync(opt.flash, { recursive: true });
  loadTree(FS, opt.flash, "/");
  FS.mkdirTree("/_sim");
  for (const dir of opt.sim) loadTree(FS, dir, "/_sim");
  mirror(FS, opt.flash);
  mp.runPython("import sys\nsys.path.append('/_sim')\nimport os\nos.chdir('/')\nimport _simboot");

  // Bytes that arrive while boot.py / main.py run wait for the REPL, as they wait in a
  // board's UART buffer; a Ctrl-C among them interrupts the running file.
  let booting = true;
  const early = [];
  process.stdin.on("data", (data) => {
    if (!booting) return onBytes(data);
    for (const c of data) {
      if (c === 3) mp._module._mp_sched_keyboard_interrupt();
      else early.push(c);
    }
  });

  await runFile(mp, FS, "boot.py");
  if (opt.mode === "power") {
    // a main.py that never yields blocks this process's event loop: only the front can
    // tell (no "repl" report) and restarts the board without it on a Ctrl-C
    report({ boot: "main" });
    await runFile(mp, FS, "main.py");
  }

  // The REPL. Bytes strictly in order through one promise chain.
  let chain = Promise.resolve();
  let running = false; // a character is being processed...
  let since = 0; // ...since then: a long one is code executing (Ctrl-C must interrupt it)
  const feed = (c) => {
    chain = chain
      .then(() => {
        running = true;
        since = Date.now();
        return mp.replProcessCharWithAsyncify(c);
      })
      .catch(() => {})
      .finally(() => {
        running = false;
      });
    return chain;
  };
  if (opt.mode === "raw") {
    quiet = true;
    mp.replInit();
    quiet = false;
    serialWrite(Buffer.from("\r\n")); // what a board prints before its raw REPL banner
    quiet = true;
    await feed(1);
    quiet = false;
    serialWrite(Buffer.from("raw REPL; CTRL-B to exit\r\n>"));
  } else {
    mp.replInit();
  }
  const stopApp =
    "import sys\n_d = sys.modules.get('apps.device')\n" +
    "if _d is not None and hasattr(_d, 'stop_running'):\n    _d.stop_running()\ndel _d";
  function onBytes(data) {
    for (const c of data) {
      if (c === 3) {
        if (running && Date.now() - since > 50) mp._module._mp_sched_keyboard_interrupt();
        else {
          try {
            mp.runPython(stopApp);
          } catch {
            /* nothing running */
          }
        }
      }
      feed(c);
    }
  }
  booting = false;
  report({ boot: "repl" });
  onBytes(Buffer.from(early));
  process.stdin.on("end", () => chain.then(() => process.exit(0)));
}

main().catch((err) => {
  process.stderr.write(`vboard: ${err.stack || err}\n`);
  process.exit(3);
});
