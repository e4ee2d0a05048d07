#!/usr/bin/env python3
"""pminit against pm2, Node's cluster module and tini, in one run: every
number the README quotes.

usage: python3 bench/run.py [--seconds S] [--workers N] [--idle-seconds S]
                            [--soak N] [--reload-runs N] [--liveness-rounds N]
                            [--no-install] [--render-only]

Installs what it needs (wrk, hyperfine, tini, dumb-init, catatonit from
Debian; pm2 and autocannon from npm, pinned in bench/package-lock.json;
matplotlib from PyPI), builds the static pminit, then measures on loopback,
every load bounded in count and time:

- req/s and p50/p99 latency (wrk --latency), keep-alive and a new
  connection per request (two wrk processes, 64 connections in all), for
  the same app (bench/app.js) under: pminit -i N (shared and per-worker
  sockets), pm2-runtime -i N (pm2's cluster mode), Node's cluster module
  (bench/cluster.js), tini with one Node, and N independent Node processes
  on N ports (the upper bound: no init at all);
- failed requests and p50/p99 latency during 5 rolling reloads under load
  (autocannon -c 8, keep-alive and a new connection per request): kill -HUP
  to pminit against `pm2 reload`;
- memory (RSS) of pminit with 4 Node workers against pm2-runtime, the
  cluster primary and tini; idle cost (CPU ticks, context switches of every
  thread, per minute) over --idle-seconds;
- RSS and open fds of pminit with 4 and 64 `sleep 1000` workers;
- a soak: --soak rolling reloads (`pminit reload`) of 4 `sleep` workers and
  --soak crash restarts (workers that exit with code 1 after 50 ms, which
  outlive --min-uptime 10ms, so no crash loop), pminit's RSS and open fds
  sampled from start to end, the slope per 1,000 events (judged on the
  heap, RssAnon: VmRSS also counts the binary's pages faulted in on first use);
- the wall time of `pminit reload` with 4 Node workers (defaults), median of
  --reload-runs;
- what liveness costs keep-alive req/s (bench/healing.py's paired rounds,
  on against --hang-timeout 0, --liveness-rounds rounds);
- start-up (`X -- /bin/true`, hyperfine) and binary size against
  tini-static, dumb-init and catatonit.

Writes bench/results.json, bench/RESULTS.md, bench/chart.png and the README's
blocks between `<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->`.
Each block is rendered from results.json by a rule kept there too
(results.json "render": literal lines and templates whose `{}` are values
summed, divided, scaled and formatted as Python's `{:,.Nf}`), which
tests/readme_numbers.rs re-applies: a figure edited by hand in the README
fails `cargo test`. --render-only re-renders all of it from the existing
results.json without measuring.

The defaults measure for about 11 minutes on 2 CPUs (plus installing and
building: under 15 minutes in all).
"""
import argparse
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import healing
from layouts import free_port, parse_wrk

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
APP = os.path.join(HERE, "app.js")
BIN = os.path.join(HERE, "node_modules", ".bin")
README = os.path.join(ROOT, "README.md")
RESULTS_JSON = os.path.join(HERE, "results.json")
RESULTS_MD = os.path.join(HERE, "RESULTS.md")
DEBIAN = ["wrk", "hyperfine", "tini", "dumb-init", "catatonit"]

# The soak's workers and their probation.
SOAK_WORKERS = 4
SOAK_MIN_UPTIME = "10ms"
CRASH_SCRIPT = "sleep 0.05; exit 1"
# Events before the first sample: first-use allocations. The allocator's
# arenas reach their size within ~100 reloads and ~500 crash restarts
# (flat from there over 5,000 restarts on the development machine).
def soak_warmup(count, crashes=False):
    return max(20, count if crashes else count // 5)
# Issue 20's targets.
TARGET_BYTES = 1_572_864
TARGET_RSS_4_KB = 1536
TARGET_RSS_64_KB = 2048
TARGET_SLOPE_KB = 4.0  # per 1,000 events: one page


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def install():
    missing = [p for p, cmd in zip(DEBIAN, ["wrk", "hyperfine", "tini-static", "dumb-init", "catatonit"])
               if shutil.which(cmd) is None]
    if missing:
        log("== apt-get install", *missing)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    log("== npm ci --prefix bench (pm2, autocannon)")
    subprocess.run(["npm", "ci", "--prefix", HERE, "--no-audit", "--no-fund", "--silent"], check=True)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        log("== pip install matplotlib")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], check=True)


def build():
    log("== scripts/build-static.sh")
    out = subprocess.run([os.path.join(ROOT, "scripts", "build-static.sh")], check=True,
                         capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


class Proc:
    """A process in a session of its own, whose output lines we read in
    threads."""

    def __init__(self, cmd, env=None):
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, **(env or {})), start_new_session=True)
        self.pid = self.proc.pid
        healing.LIVE.add(self.pid)
        self.lines = []
        self.cond = threading.Condition()
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream):
        for line in stream:
            with self.cond:
                self.lines.append(line.rstrip())
                self.cond.notify_all()

    def count(self, text):
        with self.cond:
            return sum(1 for l in self.lines if text in l)

    def wait_for(self, text, count=1, timeout=30):
        end = time.monotonic() + timeout
        with self.cond:
            while sum(1 for l in self.lines if text in l) < count:
                left = end - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise RuntimeError(f"{shlex.join(self.cmd)}: no {text!r} x{count}; output:\n"
                                       + "\n".join(self.lines[-30:]))
                self.cond.wait(min(left, 0.5))

    def stop(self):
        try:
            os.kill(self.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        # Every process of the session: pminit puts each worker in a
        # process group of its own, so killpg alone would miss them.
        healing.kill_session(self.pid)
        self.proc.wait()
        healing.LIVE.discard(self.pid)


class Setup:
    """One way of running N copies of the app: its processes and ports."""

    def __init__(self, name, procs, ports, manager=None):
        self.name, self.procs, self.ports = name, procs, ports
        # The process that is not a worker (pminit, pm2, the primary, tini).
        self.manager = manager

    def stop(self):
        for p in self.procs:
            p.stop()


def start(name, pminit, workers, pm2_home, app=APP):
    port = free_port()
    env = {"PORT": str(port)}
    if name.startswith("pminit"):
        layout = name.split()[1]
        p = Proc([pminit, "-i", str(workers), "-l", f"127.0.0.1:{port}", "--socket-layout", layout,
                  "--kill-timeout", "3s", "--", "node", app], env)
        p.wait_for("listening pid=", workers)
        return Setup(name, [p], [port], p.pid)
    if name == "pm2 cluster":
        p = Proc([os.path.join(BIN, "pm2-runtime"), "start", app, "-i", str(workers), "--name", "app"],
                 dict(env, PM2_HOME=pm2_home))
        p.wait_for("listening pid=", workers)
        return Setup(name, [p], [port], p.pid)
    if name == "node cluster":
        p = Proc(["node", os.path.join(HERE, "cluster.js"), str(workers)], env)
        p.wait_for("listening pid=", workers)
        return Setup(name, [p], [port], p.pid)
    if name == "tini + 1 node":
        p = Proc(["tini-static", "-s", "--", "node", APP], env)
        p.wait_for("listening pid=", 1)
        return Setup(name, [p], [port], p.pid)
    if name == "independent":
        ports = [free_port() for _ in range(workers)]
        procs = [Proc(["node", APP], {"PORT": str(q)}) for q in ports]
        for p in procs:
            p.wait_for("listening pid=", 1)
        return Setup(name, procs, ports)
    raise ValueError(name)


def wrk(ports, seconds, close, conns=64):
    """Load from at least two wrk processes at once, one thread each, the
    connections split between them; a setup with one port gets the same
    two, so every setup sees the same load generator. req/s summed,
    latency percentiles (wrk --latency) averaged over the wrk processes."""
    targets = ports if len(ports) >= 2 else ports * 2
    procs = []
    for port in targets:
        cmd = ["wrk", "-t", "1", "-c", str(max(2, conns // len(targets))),
               "-d", f"{seconds}s", "--latency", "--timeout", "5s"]
        if close:
            cmd += ["-H", "Connection: close"]
        procs.append(subprocess.Popen(cmd + [f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE, text=True))
    results = [parse_wrk(p.communicate(timeout=seconds + 60)[0]) for p in procs]
    return {
        "rps": sum(r["rps"] for r in results),
        "p50": sum(r["p50"] for r in results) / len(results),
        "p99": sum(r["p99"] for r in results) / len(results),
        "errors": sum(r["errors"] for r in results),
    }


def status_kb(pid):
    """VmRSS, RssAnon and RssFile of pid, in kB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(line.split()[1])
    return out


def rss_kb(pid):
    return status_kb(pid)["VmRSS"]


def fds(pid, reads=5):
    """Open fds of pid: the fewest of a few reads 5 ms apart, so a spawn's
    short-lived fds (its report pipe) do not count."""
    out = []
    for i in range(reads):
        if i:
            time.sleep(0.005)
        out.append(len(os.listdir(f"/proc/{pid}/fd")))
    return min(out)


def cpu_and_switches(pid):
    """CPU ticks of pid and the context switches of all its threads."""
    return healing.cpu_ticks(pid), sum(healing.switches(pid))


def throughput(pminit, workers, seconds, pm2_home):
    rows = {}
    for name in ["pminit shared", "pminit per-worker", "pm2 cluster", "node cluster",
                 "tini + 1 node", "independent"]:
        s = start(name, pminit, workers, pm2_home)
        try:
            wrk(s.ports, 1, False, 16)  # warm-up
            ka = wrk(s.ports, seconds, False)
            new = wrk(s.ports, seconds, True)
            rows[name] = {"keep_alive": ka, "new_conn": new}
            log(f"{name:18} keep-alive {ka['rps']:8.0f} req/s p99 {ka['p99']:6.2f} ms   "
                f"new conn {new['rps']:8.0f} req/s p99 {new['p99']:6.2f} ms")
        finally:
            s.stop()
    return rows


def autocannon(port, close):
    """autocannon -c 8 until SIGINT (bench/load.js)."""
    cmd = ["node", os.path.join(HERE, "load.js"), f"http://127.0.0.1:{port}/", "8"]
    if close:
        cmd.append("close")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def reloads(pminit, workers, pm2_home, count):
    """Failed requests while `count` rolling reloads run under load
    (autocannon), for an app with a well-behaved drain (bench/app.js) and
    one with no signal handler at all (bench/plain.js)."""
    out = {}
    for app in (APP, os.path.join(HERE, "plain.js")):
        for name in ["pminit shared", "pm2 cluster"]:
            for close in (False, True):
                key = (f"{name}, {os.path.basename(app)}, "
                       f"{'new conn' if close else 'keep-alive'}")
                out[key] = v = reload_cell(name, app, close, pminit, workers, pm2_home, count)
                log(f"{key:40} {v['failed']} failed of {v['requests']}")
    return out


def reload_latency(pminit, workers, pm2_home, count):
    """Latency while `count` rolling reloads run under load: one wrk
    (-t1 -c8 --latency, microsecond percentiles; autocannon's are whole
    milliseconds, and wrong with Connection: close) from before the first
    reload to after the last, stopped by SIGINT; bench/app.js."""
    out = {}
    for name in ["pminit shared", "pm2 cluster"]:
        for close in (False, True):
            key = f"{name}, {'new conn' if close else 'keep-alive'}"
            out[key] = v = reload_cell(name, APP, close, pminit, workers, pm2_home, count, load="wrk")
            log(f"{key:28} during reloads: {v['rps']:.0f} req/s, p50 {v['p50']:.2f} ms, "
                f"p99 {v['p99']:.2f} ms, {v['errors']} socket errors")
    return out


def reload_cell(name, app, close, pminit, workers, pm2_home, count, load="autocannon"):
    s = start(name, pminit, workers, pm2_home, app)
    try:
        if load == "wrk":
            cmd = ["wrk", "-t", "1", "-c", "8", "-d", "600s", "--latency", "--timeout", "5s"]
            if close:
                cmd += ["-H", "Connection: close"]
            gen = subprocess.Popen(cmd + [f"http://127.0.0.1:{s.ports[0]}/"], stdout=subprocess.PIPE, text=True)
        else:
            gen = autocannon(s.ports[0], close)  # until SIGINT, once the reloads are done
        try:
            time.sleep(1)  # bench: let the load reach full speed before the first reload
            for g in range(1, count + 1):
                if name.startswith("pminit"):
                    os.kill(s.manager, signal.SIGHUP)
                    s.procs[0].wait_for(f"reload to generation {g} finished", timeout=60)
                else:
                    subprocess.run([os.path.join(BIN, "pm2"), "reload", "app"], check=True, timeout=60,
                                   capture_output=True, env=dict(os.environ, PM2_HOME=pm2_home))
            # bench: pm2 reload returns before its old workers are gone; give
            # their requests time to end (or fail) before the count.
            time.sleep(2)
        finally:
            gen.send_signal(signal.SIGINT)
            text = gen.communicate(timeout=60)[0]
        if load == "wrk":
            return parse_wrk(text)
        r = json.loads(text)
        return {"requests": r["requests"]["total"], "failed": r["errors"] + r["timeouts"] + r["non2xx"],
                "errors": r["errors"], "timeouts": r["timeouts"], "non2xx": r["non2xx"]}
    finally:
        s.stop()


def memory_and_idle(pminit, pm2_home, idle_seconds):
    out = {}
    for name in ["pminit shared", "pm2 cluster", "node cluster", "tini + 1 node"]:
        s = start(name, pminit, 1 if name.startswith("tini") else 4, pm2_home)
        try:
            time.sleep(3)  # bench: let start-up work (first pings, JIT, GC) settle before sampling
            t0, c0, m0 = *cpu_and_switches(s.manager), time.monotonic()
            time.sleep(idle_seconds)
            t1, c1, m1 = *cpu_and_switches(s.manager), time.monotonic()
            out[name] = {"rss_kb": rss_kb(s.manager), "idle_ticks": t1 - t0, "idle_switches": c1 - c0,
                         "idle_window_s": round(m1 - m0, 3)}
            if name.startswith("pminit"):
                # Under a container memory limit a housekeeping round runs every 4 s too.
                out[name]["housekeeping"] = s.procs[0].count("memory budget") > 0
            log(f"{name:18} rss {out[name]['rss_kb']} kB, idle {t1 - t0} ticks, "
                f"{(c1 - c0) * 60 / (m1 - m0):.0f} switches/min")
        finally:
            s.stop()
    return out


def rss_workers(pminit):
    """RSS and open fds of pminit with 4 and 64 `sleep 1000` workers: no
    Node (64 Node workers do not fit 2 CPUs), so no IPC channels."""
    out = {}
    for n in (4, 64):
        p = Proc([pminit, "-i", str(n), "--kill-timeout", "1s", "--", "sleep", "1000"])
        try:
            p.wait_for("started (pid", n)
            time.sleep(1)  # bench: start-up done
            out[str(n)] = dict(status_kb(p.pid), fds=fds(p.pid))
            log(f"pminit -i {n} -- sleep 1000: rss {out[str(n)]['VmRSS']} kB, {out[str(n)]['fds']} fds")
        finally:
            p.stop()
    return out


def slope_per_1000(points):
    """Least-squares slope of y over x, per 1,000 x; points (x, y)."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den * 1000 if den else 0.0


def soak_sample(pid, events):
    kb = status_kb(pid)
    return {"events": events, "rss_kb": kb["VmRSS"], "anon_kb": kb["RssAnon"], "fds": fds(pid)}


def soak_summary(samples, events):
    """VmRSS is the binary's pages faulted in on first use (RssFile: clean,
    shared, bounded by the file's size) plus the heap, stack and data
    (RssAnon): a leak shows in RssAnon, so that slope is the one judged."""
    first, last = samples[0], samples[-1]
    return {
        "events": events,
        "rss_kb_start": first["rss_kb"], "rss_kb_end": last["rss_kb"],
        "anon_kb_start": first["anon_kb"], "anon_kb_end": last["anon_kb"],
        "anon_slope_kb_per_1000": slope_per_1000([(s["events"], s["anon_kb"]) for s in samples]),
        "fds_start": first["fds"], "fds_end": last["fds"],
        "rss_slope_kb_per_1000": slope_per_1000([(s["events"], s["rss_kb"]) for s in samples]),
        "fds_slope_per_1000": slope_per_1000([(s["events"], s["fds"]) for s in samples]),
        "samples": samples,
    }


def soak_reloads(pminit, count):
    """`count` rolling reloads of SOAK_WORKERS `sleep` workers, one after
    the other, each through `pminit reload` (which waits for the end), after
    soak_warmup(count) unsampled ones. pminit's RSS and fds every count/20
    reloads."""
    cmd = [pminit, "-i", str(SOAK_WORKERS), "--min-uptime", SOAK_MIN_UPTIME, "--kill-timeout", "1s",
           "--", "sleep", "1000"]
    p = Proc(cmd)
    try:
        p.wait_for("started (pid", SOAK_WORKERS)

        def reload():
            t = time.monotonic()
            rc = subprocess.run([pminit, "reload", "--pid", str(p.pid)], capture_output=True,
                                timeout=60).returncode
            return time.monotonic() - t, rc

        def sample(i):
            time.sleep(0.1)  # bench: the last old worker exits after the reload ends
            return soak_sample(p.pid, i)

        for _ in range(soak_warmup(count)):
            reload()
        samples, times, failed = [sample(0)], [], 0
        every = max(1, count // 20)
        t0 = time.monotonic()
        for i in range(1, count + 1):
            took, rc = reload()
            times.append(took)
            failed += rc != 0
            if i % every == 0 or i == count:
                samples.append(sample(i))
        out = soak_summary(samples, count)
        out.update(command=shlex.join(cmd[1:]), failed=failed, warmup=soak_warmup(count),
                   wall_s=round(time.monotonic() - t0, 3),
                   reload_ms_median=statistics.median(times) * 1000,
                   reload_ms_p99=sorted(times)[int(len(times) * 0.99) - 1] * 1000 if times else 0,
                   still_running=p.proc.poll() is None)
        log(f"soak: {count} reloads in {out['wall_s']:.0f} s ({failed} failed), median "
            f"{out['reload_ms_median']:.1f} ms; rss {out['rss_kb_start']} -> {out['rss_kb_end']} kB "
            f"(slope {out['rss_slope_kb_per_1000']:.2f}/1000), fds {out['fds_start']} -> {out['fds_end']}")
        return out
    finally:
        p.stop()


def restarts(pminit, pid):
    out = subprocess.run([pminit, "status", "--json", "--pid", str(pid)], capture_output=True,
                         text=True, timeout=10)
    return sum(w["restarts"] for w in json.loads(out.stdout)["workers"])


def soak_crashes(pminit, count, limit=600):
    """SOAK_WORKERS workers that exit with code 1 after 50 ms: each lived
    --min-uptime 10ms, so its restart is immediate and the quick-death count
    resets; `count` restarts after soak_warmup(count, crashes=True), counted by `pminit status`,
    pminit's RSS and fds sampled at every poll."""
    cmd = [pminit, "-i", str(SOAK_WORKERS), "--min-uptime", SOAK_MIN_UPTIME, "--kill-timeout", "1s",
           "--", "sh", "-c", CRASH_SCRIPT]
    p = Proc(cmd)
    try:
        p.wait_for("started (pid", SOAK_WORKERS)
        end = time.monotonic() + limit
        while restarts(pminit, p.pid) < soak_warmup(count, crashes=True):
            time.sleep(0.1)
        base = restarts(pminit, p.pid)
        samples = [soak_sample(p.pid, 0)]
        t0 = time.monotonic()
        while True:
            if p.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"crash soak: pminit ended or {limit} s passed; output:\n"
                                   + "\n".join(p.lines[-20:]))
            n = restarts(pminit, p.pid) - base
            samples.append(soak_sample(p.pid, n))
            if n >= count:
                break
            time.sleep(max(0.2, count / 1000 * 0.5))  # ~ a sample per 10-20 restarts at 1,000
        out = soak_summary(samples, samples[-1]["events"])
        out.update(command=shlex.join(cmd[1:]), warmup=soak_warmup(count, crashes=True),
                   wall_s=round(time.monotonic() - t0, 3), crash_loops=p.count("crash loop"),
                   still_running=p.proc.poll() is None)
        log(f"soak: {out['events']} crash restarts in {out['wall_s']:.0f} s, "
            f"crash loops {out['crash_loops']}; rss {out['rss_kb_start']} -> {out['rss_kb_end']} kB "
            f"(slope {out['rss_slope_kb_per_1000']:.2f}/1000), fds {out['fds_start']} -> {out['fds_end']}")
        return out
    finally:
        p.stop()


def reload_time(pminit, runs):
    """Wall time of `pminit reload` with 4 Node workers (bench/app.js) and
    the defaults (--min-uptime 1s: each new worker is on probation that
    long before the old one is stopped)."""
    port = free_port()
    p = Proc([pminit, "-i", "4", "-l", f"127.0.0.1:{port}", "--kill-timeout", "3s", "--", "node", APP],
             {"PORT": str(port)})
    try:
        p.wait_for(" is ready", 4)
        times = []
        for _ in range(runs):
            t = time.monotonic()
            subprocess.run([pminit, "reload", "--pid", str(p.pid)], check=True, capture_output=True,
                           timeout=120)
            times.append(time.monotonic() - t)
        out = {"workers": 4, "runs": runs, "median_s": statistics.median(times), "samples_s": times}
        log(f"pminit reload, 4 Node workers: median {out['median_s']:.2f} s of {runs}")
        return out
    finally:
        p.stop()


def liveness_cost(pminit, rounds, seconds):
    """bench/healing.py's paired rounds: keep-alive req/s (and server CPU
    per request) of pminit -i 2 -- node hello.js with liveness on (the
    default --hang-timeout 30s) against --hang-timeout 0."""
    args = argparse.Namespace(pminit=pminit, node=shutil.which("node") or "node", rounds=rounds,
                              seconds=seconds, stress=False,
                              taskset=shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2)
    t = healing.throughput(args)
    on = t["ratios_vs_off"]["on"]
    out = {"rounds": rounds, "seconds": seconds, "taskset": args.taskset,
           "rps_on_median": statistics.median(t["launchers"]["on"]["rps"]),
           "rps_off_median": statistics.median(t["launchers"]["off"]["rps"]),
           "rps_ratio": on["rps"], "cpu_ratio": on["cpu"]}
    log(f"liveness on / off keep-alive req/s: {on['rps']['median']:.3f} (median of {rounds})")
    return out


def startup(pminit, runs=300):
    cmds = {
        "pminit": f"{pminit} -- /bin/true",
        "tini-static": "tini-static -s -- /bin/true",
        "dumb-init": "dumb-init /bin/true",
        "catatonit": "catatonit -- /bin/true",
    }
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        subprocess.run(["hyperfine", "-N", "--warmup", "20", "--runs", str(runs), "--export-json", path,
                        *cmds.values()], check=True, capture_output=True)
        res = json.load(open(path))["results"]
    finally:
        os.unlink(path)
    return {name: {"mean_ms": r["mean"] * 1000, "stddev_ms": r["stddev"] * 1000}
            for name, r in zip(cmds, res)}


def sizes(pminit):
    out = {}
    for name, path in [("pminit", pminit), ("tini-static", shutil.which("tini-static")),
                       ("catatonit", shutil.which("catatonit")), ("dumb-init", shutil.which("dumb-init"))]:
        kind = subprocess.run(["file", "-L", path], capture_output=True, text=True).stdout
        out[name] = {"bytes": os.path.getsize(path),
                     "static": "statically linked" in kind or "static-pie linked" in kind}
    return out


def chart(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = results["throughput"]
    names = list(t)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    x = range(len(names))
    ax = axes[0]
    ax.bar([i - 0.2 for i in x], [t[n]["keep_alive"]["rps"] for n in names], 0.4, label="keep-alive")
    ax.bar([i + 0.2 for i in x], [t[n]["new_conn"]["rps"] for n in names], 0.4, label="new connection")
    ax.set_xticks(list(x), names, rotation=30, ha="right")
    ax.set_ylabel("requests/s")
    ax.set_title(f"Throughput, {results['workers']} workers")
    ax.legend()
    r = results["reloads"]
    ax = axes[1]
    keys = list(r)
    ax.bar(range(len(keys)), [r[k]["failed"] for k in keys],
           color=["tab:green" if k.startswith("pminit") else "tab:red" for k in keys])
    ax.set_xticks(range(len(keys)), keys, rotation=30, ha="right")
    ax.set_ylabel("failed requests")
    ax.set_title(f"Failed requests across {results.get('reload_count', 5)} reloads")
    m = results["memory"]
    ax = axes[2]
    mk = list(m)
    ax.bar(range(len(mk)), [m[k]["rss_kb"] / 1024 for k in mk])
    ax.set_xticks(range(len(mk)), mk, rotation=30, ha="right")
    ax.set_ylabel("MiB")
    ax.set_yscale("log")
    ax.set_title("Manager RSS, log scale")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


# --- the rendering rule (tests/readme_numbers.rs applies it too) ------------------

def get(res, path):
    for key in path:
        res = res[key]
    return res


def has(res, path):
    try:
        return get(res, path) is not None
    except (KeyError, TypeError):
        return False


def no_nan(x):
    """NaN and infinities (a percentile wrk did not print) as null: JSON has
    neither, and a figure from one shows as "not in this run"."""
    if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
        return None
    if isinstance(x, dict):
        return {k: no_nan(v) for k, v in x.items()}
    if isinstance(x, list):
        return [no_nan(v) for v in x]
    return x


def num(res, *paths, d=0, div=(), mul=None):
    """A value: the sum of the numbers at `paths` ("a/b/c" keys), divided by
    the sum of those at `div`, times `mul`, shown with `d` decimals and
    thousands separators. None (shown as n/a) when a path is missing."""
    spec = {"sum": [p.split("/") for p in paths], "d": d}
    if div:
        spec["div"] = [p.split("/") for p in div]
    if mul is not None:
        spec["mul"] = mul
    if not all(has(res, p) for p in spec["sum"] + spec.get("div", [])):
        return None
    return spec


def txt(res, path):
    """A string value from results.json, verbatim."""
    path = path.split("/")
    return {"s": path} if has(res, path) else None


def line(*parts):
    """A literal line, or a template whose `{}` are the value parts."""
    t, v = "", []
    for part in parts:
        if isinstance(part, str):
            assert "{}" not in part, part
            t += part
        elif part is None:
            t += "n/a"
        else:
            t += "{}"
            v.append(part)
    return {"t": t, "v": v} if v else t


def opt(*parts):
    """The parts, or "not in this run" when a value among them is missing."""
    return ("not in this run",) if any(p is None for p in parts) else parts


def fmt_number(x, d):
    s = f"{x:,.{d}f}"
    if s.startswith("-") and not any(c in "123456789" for c in s):
        s = s[1:]  # no "-0.00"
    return s


def value(res, spec):
    if "s" in spec:
        return str(get(res, spec["s"]))
    x = 0.0
    for p in spec["sum"]:
        x += get(res, p)
    if "div" in spec:
        y = 0.0
        for p in spec["div"]:
            y += get(res, p)
        x = x / y
    if "mul" in spec:
        x = x * spec["mul"]
    return fmt_number(x, spec["d"])


def render_line(res, ln):
    if isinstance(ln, str):
        return ln
    pieces = ln["t"].split("{}")
    assert len(pieces) == len(ln["v"]) + 1, ln
    return pieces[0] + "".join(value(res, v) + p for v, p in zip(ln["v"], pieces[1:]))


def render_block(res, lines):
    return "\n".join(render_line(res, ln) for ln in lines)


# --- the README's blocks -----------------------------------------------------------

HEAD = [("pminit shared", "pminit"), ("pm2 cluster", "pm2 cluster (pm2-runtime)"),
        ("node cluster", "Node cluster"), ("tini + 1 node", "tini + 1 node"), ("independent", None)]


def blocks(res):
    """name -> lines of each README block, from the results alone."""
    R = res
    out = {}

    # Try it: the binary's size.
    out["size"] = ["", line(
        "`scripts/build-static.sh` builds the static binary and prints its path: it was ",
        num(R, "sizes/pminit/bytes"), " bytes in the run of `bench/run.py` of ", txt(R, "date"),
        " (", txt(R, "rustc"), "; [docs/static-binary.md](docs/static-binary.md))."), ""]

    h = ["", line("One run of `bench/run.py` on ", txt(R, "date"), " (commit ", txt(R, "commit"), "; ",
                  txt(R, "machine"), "), everything on loopback, the same Node app (`bench/app.js`) "
                  "under every setup, ", num(R, "workers"), " workers on CPUs shared with the load "
                  "generator (two wrk processes, ", num(R, "connections"), " connections, ", num(R, "seconds"),
                  " s per cell). Every row, the targets met and missed, and the chart: "
                  "[bench/RESULTS.md](bench/RESULTS.md).")]
    if has(R, ["note"]):
        h += ["", line(txt(R, "note"))]
    h += ["", line("| | " + " | ".join(label or "" for _, label in HEAD[:-1]) + " | ",
                   num(R, "workers"), " independent nodes |"),
          "|---|---|---|---|---|---|"]

    def row(label, cell):
        return line(f"| {label} |", *[p for name, _ in HEAD for p in (" ", *cell(name), " |")])

    tp = lambda key, what: (lambda n: (num(R, f"throughput/{n}/{key}/{what}", d=0 if what == "rps" else 2),))
    lat = lambda key: (lambda n: (num(R, f"throughput/{n}/{key}/p50", d=2), " / ",
                                  num(R, f"throughput/{n}/{key}/p99", d=2)))
    vs = lambda key: (lambda n: (num(R, f"throughput/pminit shared/{key}/rps", div=[f"throughput/{n}/{key}/rps"],
                                     d=2), "×"))
    h.append(row("new connection per request, req/s", tp("new_conn", "rps")))
    h.append(row("new connection, pminit's req/s ÷ this", vs("new_conn")))
    h.append(row("new connection, p50 / p99 latency, ms", lat("new_conn")))
    h.append(row("keep-alive, req/s", tp("keep_alive", "rps")))
    h.append(row("keep-alive, pminit's req/s ÷ this", vs("keep_alive")))
    h.append(row("keep-alive, p50 / p99 latency, ms", lat("keep_alive")))

    def rel(n, field, d=0, app=None, close=None):
        """A reload cell: the sum over apps / loads, for pminit and pm2 only."""
        if n not in ("pminit shared", "pm2 cluster"):
            return None
        keys = [f"reloads/{n}, {a}, {c}/{field}" for a in (app or ["app.js", "plain.js"])
                for c in (close or ["keep-alive", "new conn"])]
        return num(R, *keys, d=d)

    def failed(n):
        if n not in ("pminit shared", "pm2 cluster"):
            return ("",)
        return (rel(n, "failed", app=["app.js"]), " / ", rel(n, "failed", app=["plain.js"]))

    def during(n):
        if n not in ("pminit shared", "pm2 cluster"):
            return ("",)
        return opt(num(R, f"reload_latency/{n}, keep-alive/p99", d=2), " / ",
                   num(R, f"reload_latency/{n}, new conn/p99", d=2))

    h.append(line("| failed requests in ", num(R, "reload_count"), " rolling reloads under load, "
                  "app that drains / app with no handler |",
                  *[p for name, _ in HEAD for p in (" ", *failed(name), " |")]))
    h.append(line("| p99 latency during ", num(R, "reload_count"), " rolling reloads (app that drains, "
                  "wrk -c8), keep-alive / new connection, ms |",
                  *[p for name, _ in HEAD for p in (" ", *during(name), " |")]))

    def mem(n):
        return ("",) if n == "independent" else (num(R, f"memory/{n}/rss_kb"),)

    def idle(n):
        if n == "independent":
            return ("",)
        window = f"memory/{n}/idle_window_s" if has(R, ["memory", n, "idle_window_s"]) else "idle_seconds"
        return (num(R, f"memory/{n}/idle_switches", div=[window], mul=60),)

    h.append(row("RSS of the managing process (4 Node workers; tini: 1), kB", mem))
    h.append(row("wake-ups per minute while idle (context switches)", idle))
    h.append("")
    out["headline"] = h

    s, c = "soak_reloads", "soak_crashes"

    def prow(label, value, compare=()):
        return line(f"| {label} | ", *opt(*value), " | ", *opt(*compare), " |")

    def soak_rows(k, what):
        """A soak's RSS (and heap) row and its fds row."""
        return [
            prow(f"soak: those {what}, RSS of PID 1 start → end (slope per 1,000); of it heap (RssAnon)",
                 (num(R, f"{k}/rss_kb_start"), " → ", num(R, f"{k}/rss_kb_end"), " kB (",
                  num(R, f"{k}/rss_slope_kb_per_1000", d=2), " kB); ", num(R, f"{k}/anon_kb_start"), " → ",
                  num(R, f"{k}/anon_kb_end"), " kB (", num(R, f"{k}/anon_slope_kb_per_1000", d=2), " kB)")),
            prow(f"soak: those {what}, open fds of PID 1 start → end",
                 (num(R, f"{k}/fds_start"), " → ", num(R, f"{k}/fds_end"))),
        ]

    p = ["", "| pminit alone | pminit | for comparison |", "|---|---|---|",
         prow("binary size", (num(R, "sizes/pminit/bytes"), " bytes"),
              ("tini-static ", num(R, "sizes/tini-static/bytes"), ", catatonit ",
               num(R, "sizes/catatonit/bytes"))),
         prow("start-up, `X -- /bin/true` (hyperfine, mean)", (num(R, "startup/pminit/mean_ms", d=2), " ms"),
              ("tini-static ", num(R, "startup/tini-static/mean_ms", d=2), " ms, catatonit ",
               num(R, "startup/catatonit/mean_ms", d=2), " ms")),
         prow("RSS of PID 1 with 4 / 64 `sleep` workers", (num(R, "rss_workers/4/VmRSS"), " / ",
                                                           num(R, "rss_workers/64/VmRSS"), " kB")),
         prow("rolling reload of 4 Node workers (`pminit reload`, default `--min-uptime 1s`)",
              (num(R, "reload_time/median_s", d=2), " s, median of ", num(R, "reload_time/runs"))),
         prow("soak: rolling reloads of 4 `sleep` workers (`--min-uptime 10ms`), one after the other",
              (num(R, f"{s}/events"), ", median ", num(R, f"{s}/reload_ms_median", d=1), " ms each, ",
               num(R, f"{s}/failed"), " failed")),
         *soak_rows(s, "reloads"),
         prow("soak: crash restarts (workers exit 1 after 50 ms, `--min-uptime 10ms`)",
              (num(R, f"{c}/events"), ", ", num(R, f"{c}/crash_loops"), " crash loops")),
         *soak_rows(c, "restarts"),
         prow("keep-alive req/s, liveness on ÷ off (bench/healing.py's paired rounds)",
              (num(R, "liveness/rps_ratio/median", d=3), "×, median of ", num(R, "liveness/rounds"))),
         ""]
    out["pminit"] = p
    return out


def update_readme(res, path=README):
    text = open(path).read()
    for name, lines in res["render"].items():
        begin, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
        pat = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.S)
        if not pat.search(text):
            sys.exit(f"{path}: no {begin} ... {end}")
        body = render_block(res, lines)
        text = pat.sub(lambda _: f"{begin}\n{body}\n{end}", text)
    open(path, "w").write(text)


# --- RESULTS.md ----------------------------------------------------------------------

def ratio(a, b):
    return a / b if b else float("inf")


def targets(res):
    """(what, measured, target, verdict); issue 20's targets, and issue 19's
    for liveness."""
    rows = []

    def row(what, target, need, measure):
        if not all(has(res, k.split("/")) for k in need):
            rows.append((what, "not measured in this run", target, "not measured"))
            return
        value, ok = measure()
        rows.append((what, value, target, "met" if ok else "missed"))

    t = res.get("throughput", {})
    p = t.get("pminit shared", {})

    def vs(key, other, minimum):
        x = ratio(p[key]["rps"], t[other][key]["rps"])
        return f"{x:.2f}x", x >= minimum

    row("new-connection req/s vs pm2 cluster", ">= 1.8x", ["throughput/pm2 cluster"],
        lambda: vs("new_conn", "pm2 cluster", 1.8))
    row("new-connection req/s vs independent processes", ">= 0.95x", ["throughput/independent"],
        lambda: vs("new_conn", "independent", 0.95))
    row("keep-alive req/s vs pm2 cluster", ">= 1.0x", ["throughput/pm2 cluster"],
        lambda: vs("keep_alive", "pm2 cluster", 1.0))

    def failed():
        r = res["reloads"]
        pm = sum(v["failed"] for k, v in r.items() if k.startswith("pminit"))
        pm2 = sum(v["failed"] for k, v in r.items() if k.startswith("pm2"))
        return f"{pm} (pm2: {pm2})", pm == 0

    row(f"failed requests across {res.get('reload_count', 5)} reloads under load, pminit", "0",
        ["reloads"], failed)
    row("pminit RSS with 4 Node workers", f"<= {TARGET_RSS_4_KB:,} kB", ["memory/pminit shared"],
        lambda: (f"{res['memory']['pminit shared']['rss_kb']:,} kB",
                 res["memory"]["pminit shared"]["rss_kb"] <= TARGET_RSS_4_KB))
    row("pminit RSS with 4 `sleep` workers", f"<= {TARGET_RSS_4_KB:,} kB", ["rss_workers/4"],
        lambda: (f"{res['rss_workers']['4']['VmRSS']:,} kB",
                 res["rss_workers"]["4"]["VmRSS"] <= TARGET_RSS_4_KB))
    row("pminit RSS with 64 `sleep` workers", f"<= {TARGET_RSS_64_KB:,} kB", ["rss_workers/64"],
        lambda: (f"{res['rss_workers']['64']['VmRSS']:,} kB",
                 res["rss_workers"]["64"]["VmRSS"] <= TARGET_RSS_64_KB))
    for key, what in (("soak_reloads", "rolling reloads"), ("soak_crashes", "crash restarts")):
        def flat(key=key):
            s = res[key]
            ok = (s["fds_end"] == s["fds_start"] and abs(s["anon_slope_kb_per_1000"]) <= TARGET_SLOPE_KB
                  and s["still_running"] and s["events"] >= 1000
                  and s.get("failed", 0) == 0 and s.get("crash_loops", 0) == 0)
            return (f"{s['events']:,} events: heap (RssAnon) {s['anon_slope_kb_per_1000']:+.2f} kB per 1,000 "
                    f"(VmRSS {s['rss_slope_kb_per_1000']:+.2f}), "
                    f"fds {s['fds_start']} -> {s['fds_end']}", ok)
        row(f"soak, {what}: pminit's RSS and fds flat",
            f">= 1,000 events, heap (RssAnon) slope within ±{TARGET_SLOPE_KB:g} kB per 1,000, fds unchanged, "
            "no failure", [key], flat)

    def wakeups():
        m = res["memory"]["pminit shared"]
        per_min = m["idle_switches"] * 60 / m["idle_window_s"]
        lo, hi = healing.expected_per_min(30.0, 4, m.get("housekeeping", False))
        return f"{per_min:.0f} per minute (expected {lo:.0f}-{hi:.0f})", lo <= per_min <= hi

    row("pminit wake-ups while idle, 4 Node workers, liveness on",
        "within the design's range (a ping round every 4 s, 1 to 5 wake-ups each)",
        ["memory/pminit shared/idle_window_s"], wakeups)
    row("keep-alive req/s, liveness on / off (issue 19)", ">= 0.99x", ["liveness"],
        lambda: (f"{res['liveness']['rps_ratio']['median']:.3f}x",
                 res["liveness"]["rps_ratio"]["median"] >= 0.99))

    def su():
        x = ratio(res["startup"]["pminit"]["mean_ms"], res["startup"]["tini-static"]["mean_ms"])
        return f"{x:.2f}x", x <= 1.2

    row("start-up vs tini-static", "<= 1.2x", ["startup"], su)
    row("binary size", f"<= {TARGET_BYTES:,} bytes", ["sizes"],
        lambda: (f"{res['sizes']['pminit']['bytes']:,} bytes", res["sizes"]["pminit"]["bytes"] <= TARGET_BYTES))
    return rows


def f2(x):
    return "n/a" if x is None else f"{x:.2f}"


def write_md(res, path=RESULTS_MD):
    t, r, m, st, sz = res["throughput"], res["reloads"], res["memory"], res["startup"], res["sizes"]
    L = ["# Benchmarks: pminit against pm2, Node's cluster module and tini\n",
         "Generated by `bench/run.py` from [results.json](results.json); the README's figures come "
         "from the same file (tests/readme_numbers.rs checks them).\n",
         "| | |", "|---|---|",
         f"| date | {res['date']} |", f"| commit | {res['commit']} |", f"| machine | {res['machine']} |",
         f"| command | `{res['command']}` |"]
    if "loadavg_before" in res:
        L.append(f"| load average before / after | {res['loadavg_before']} / {res['loadavg_after']} |")
    L.append("")
    if "note" in res:
        L.append(res["note"] + "\n")
    L.append("One run: every ratio compares numbers taken minutes apart on the same machine. All traffic "
             "on loopback; the load generator (two wrk processes of one thread and 32 connections each, "
             "or autocannon -c 8 for the reloads) shares the CPUs with the servers, so absolute numbers "
             "are low and differences of ~10% are noise.\n")
    L.append("![chart](chart.png)\n")
    L.append("## Targets\n")
    L.append("| what | measured | target | |\n|---|---|---|---|")
    for what, value, target, verdict in targets(res):
        L.append(f"| {what} | {value} | {target} | {verdict} |")
    L.append("")
    L.append(f"## Throughput and latency ({res['workers']} workers, bench/app.js)\n")
    base = t["pminit shared"]
    L.append("| setup | keep-alive req/s | p50 / p99 ms | new conn req/s | p50 / p99 ms "
             "| pminit shared ÷ this (keep-alive / new conn) |")
    L.append("|---|---|---|---|---|---|")
    for name, v in t.items():
        ka, new = v["keep_alive"], v["new_conn"]
        L.append(f"| {name} | {ka['rps']:.0f} | {f2(ka['p50'])} / {f2(ka['p99'])} | {new['rps']:.0f} "
                 f"| {f2(new['p50'])} / {f2(new['p99'])} | {ratio(base['keep_alive']['rps'], ka['rps']):.2f} / "
                 f"{ratio(base['new_conn']['rps'], new['rps']):.2f} |")
    L.append("\n`tini + 1 node` runs one worker; `independent` is N plain Node processes on N "
             "ports, each loaded by its own wrk (the one-port setups get two wrk processes on "
             "their one port, so the load generator is the same everywhere; req/s summed, "
             "latency percentiles from `wrk --latency`, averaged over the two wrk processes): the "
             "bound with no init and no shared socket at all.\n")
    count = res.get("reload_count", 5)
    L.append(f"## Failed requests during {count} rolling reloads under load\n")
    L.append("| setup and load | requests | failed | errors / timeouts / non-2xx |\n|---|---|---|---|")
    for k, v in r.items():
        L.append(f"| {k} | {v['requests']} | {v['failed']} | {v['errors']} / {v['timeouts']} / {v['non2xx']} |")
    L.append("\npminit: `kill -HUP`, waiting for each reload to finish; pm2: `pm2 reload app` "
             "against pm2-runtime. autocannon -c 8 for the whole run. `app.js` drains on SIGINT "
             "as the README describes (stop accepting, `Connection: close`, exit when done); "
             "`plain.js` has no signal handler at all, like most apps: pminit's preload drains "
             "it, pm2 has nothing that does.\n")
    if "reload_latency" in res:
        L.append(f"## Latency during {count} rolling reloads under load\n")
        L.append("| setup and load | req/s | p50 / p99 ms | socket errors and non-2xx |\n|---|---|---|---|")
        for k, v in res["reload_latency"].items():
            L.append(f"| {k} | {v['rps']:.0f} | {f2(v['p50'])} / {f2(v['p99'])} | {v['errors']} |")
        L.append("\nbench/app.js, the same reloads as above, a second pass with one wrk (-t1 -c8 --latency) "
                 "from a second before the first reload to two after the last, stopped by SIGINT "
                 "(autocannon's percentiles are whole milliseconds, and wrong with `Connection: close`).\n")
    L.append("## Memory and idle cost of the managing process\n")
    L.append("| process | RSS | CPU ticks idle | context switches idle | per minute |\n|---|---|---|---|---|")
    for k, v in m.items():
        window = v.get("idle_window_s", res.get("idle_seconds", 10))
        L.append(f"| {k} | {v['rss_kb']} kB | {v['idle_ticks']} | {v['idle_switches']} in {window:.0f} s "
                 f"| {v['idle_switches'] * 60 / window:.0f} |")
    L.append("\npminit, pm2-runtime (its daemon runs in the same process) and the cluster primary "
             "with 4 workers; tini with one. The workers themselves (~45 MB each) are the same "
             "Node processes everywhere and are not counted. Context switches: every thread of "
             "the process (runs before 2026-12 counted the main thread only). pminit's idle "
             "wake-ups are its liveness pings (one round every 4 s at the default `--hang-timeout "
             "30s`, each worker's answer one more): [HEALING.md](HEALING.md).\n")
    if "rss_workers" in res:
        L.append("## RSS of pminit with `sleep` workers\n")
        L.append("| workers | VmRSS kB | RssAnon kB | RssFile kB | open fds |\n|---|---|---|---|---|")
        for n, v in res["rss_workers"].items():
            L.append(f"| {n} | {v['VmRSS']:,} | {v['RssAnon']:,} | {v['RssFile']:,} | {v['fds']} |")
        L.append("\n`pminit -i N --kill-timeout 1s -- sleep 1000`, one second after the last worker "
                 "started: no Node, so no IPC channels (64 Node workers do not fit 2 CPUs). RssFile is "
                 "the binary's own pages.\n")
    for key, what in (("soak_reloads", "rolling reloads"), ("soak_crashes", "crash restarts")):
        if key not in res:
            continue
        s = res[key]
        L.append(f"## Soak: {s['events']:,} {what}\n")
        L.append(f"`pminit {s['command']}`, {s['wall_s']:.0f} s. "
                 + (f"Each reload through `pminit reload` (median {s['reload_ms_median']:.1f} ms, "
                    f"p99 {s['reload_ms_p99']:.1f} ms; {s['failed']} failed). " if key == "soak_reloads" else
                    f"Restarts counted by `pminit status`; crash loops: {s['crash_loops']}. ")
                 + f"pminit still running at the end: {'yes' if s['still_running'] else 'NO'}. "
                 f"Sampled after {s.get('warmup', 20):,} unsampled events (first-use allocations).\n")
        L.append(f"RSS {s['rss_kb_start']:,} → {s['rss_kb_end']:,} kB, slope "
                 f"{s['rss_slope_kb_per_1000']:+.2f} kB per 1,000 (least squares over "
                 f"{len(s['samples'])} samples); open fds {s['fds_start']} → {s['fds_end']}, slope "
                 f"{s['fds_slope_per_1000']:+.2f} per 1,000.\n")
        L.append("Samples (events: RSS kB / fds): " + ", ".join(
            f"{x['events']}: {x['rss_kb']} / {x['fds']}" for x in s["samples"]) + "\n")
    if "reload_time" in res:
        rt = res["reload_time"]
        L.append("## Rolling reload wall time\n")
        L.append(f"`pminit reload` with {rt['workers']} Node workers (bench/app.js, defaults: each new "
                 f"worker lives `--min-uptime 1s` on probation before the old one is stopped): median "
                 f"{rt['median_s']:.2f} s of {rt['runs']} (" + ", ".join(f"{x:.2f}" for x in rt["samples_s"])
                 + " s).\n")
    if "liveness" in res:
        lv = res["liveness"]
        L.append("## What liveness costs keep-alive req/s\n")
        L.append(f"bench/healing.py's paired rounds, run from here: pminit -i 2 -- node hello.js, "
                 f"liveness on (default `--hang-timeout 30s`) against `--hang-timeout 0`, wrk -t1 -c32, "
                 f"{lv['rounds']} rounds of {lv['seconds']} s"
                 + (", server on CPU 0 and wrk on CPU 1" if lv["taskset"] else "")
                 + f". req/s on ÷ off: median {lv['rps_ratio']['median']:.3f} "
                 f"({lv['rps_ratio']['min']:.3f}-{lv['rps_ratio']['max']:.3f}); server CPU per request on "
                 f"÷ off: median {lv['cpu_ratio']['median']:.3f} "
                 f"({lv['cpu_ratio']['min']:.3f}-{lv['cpu_ratio']['max']:.3f}). Median req/s: on "
                 f"{lv['rps_on_median']:.0f}, off {lv['rps_off_median']:.0f}.\n")
    L.append("## Start-up and size\n")
    L.append("| init | `X -- /bin/true` mean ± sd (hyperfine) | ÷ tini-static | binary bytes | static |")
    L.append("|---|---|---|---|---|")
    for k in st:
        L.append(f"| {k} | {st[k]['mean_ms']:.2f} ± {st[k]['stddev_ms']:.2f} ms "
                 f"| {ratio(st[k]['mean_ms'], st['tini-static']['mean_ms']):.2f} "
                 f"| {sz[k]['bytes']:,} | {'yes' if sz[k]['static'] else 'no'} |")
    L.append("")
    open(path, "w").write("\n".join(L) + "\n")


# --- the run ---------------------------------------------------------------------------

def git(*a):
    return subprocess.run(["git", "-C", ROOT, *a], capture_output=True, text=True).stdout.strip()


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    pm2 = json.load(open(os.path.join(HERE, "node_modules", "pm2", "package.json")))["version"]
    return f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, Node {node}, pm2 {pm2}"


def render(res):
    """results.json, RESULTS.md, the README's blocks and the chart, from res."""
    res = no_nan(res)
    res["render"] = blocks(res)
    with open(RESULTS_JSON, "w") as f:
        json.dump(res, f, indent=1, allow_nan=False)
        f.write("\n")
    write_md(res)
    update_readme(res)
    try:
        chart(res, os.path.join(HERE, "chart.png"))
    except ImportError:
        log("no matplotlib: bench/chart.png not redrawn")


def measure(args):
    if not args.no_install:
        install()
    pminit = build()
    dirty = git("status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock")
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.split()
    res = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": (git("rev-parse", "--short", "HEAD") or "?") + (" + uncommitted changes in src" if dirty else ""),
        "machine": machine(),
        "rustc": " ".join(rustc[:2]) if rustc else "?",
        "command": "python3 bench/run.py" + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else ""),
        "loadavg_before": " ".join(open("/proc/loadavg").read().split()[:3]),
        "seconds": args.seconds, "workers": args.workers, "connections": 64,
        "idle_seconds": args.idle_seconds, "reload_count": args.reloads,
    }
    pm2_home = tempfile.mkdtemp(prefix="pminit-bench-pm2-")
    t0 = time.monotonic()
    try:
        log("== sizes, start-up")
        res["sizes"] = sizes(pminit)
        res["startup"] = startup(pminit)
        log("== throughput")
        res["throughput"] = throughput(pminit, args.workers, args.seconds, pm2_home)
        log("== reloads under load")
        res["reloads"] = reloads(pminit, args.workers, pm2_home, args.reloads)
        res["reload_latency"] = reload_latency(pminit, args.workers, pm2_home, args.reloads)
        log("== memory, idle")
        res["memory"] = memory_and_idle(pminit, pm2_home, args.idle_seconds)
        log("== RSS with 4 and 64 workers")
        res["rss_workers"] = rss_workers(pminit)
        log("== soak")
        res["soak_reloads"] = soak_reloads(pminit, args.soak)
        res["soak_crashes"] = soak_crashes(pminit, args.soak)
        log("== reload wall time")
        res["reload_time"] = reload_time(pminit, args.reload_runs)
        log("== liveness cost")
        res["liveness"] = liveness_cost(pminit, args.liveness_rounds, args.seconds)
    finally:
        subprocess.run([os.path.join(BIN, "pm2"), "kill"], capture_output=True,
                       env=dict(os.environ, PM2_HOME=pm2_home))
        shutil.rmtree(pm2_home, ignore_errors=True)
        healing.cleanup()
    res["loadavg_after"] = " ".join(open("/proc/loadavg").read().split()[:3])
    res["duration_s"] = round(time.monotonic() - t0)
    log(f"== measured in {res['duration_s']} s")
    return res


def on_signal(signum, _frame):
    healing.cleanup()
    sys.exit(128 + signum)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=5, help="per throughput cell and liveness round")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--idle-seconds", type=int, default=20)
    ap.add_argument("--reloads", type=int, default=5, help="rolling reloads under load, per cell")
    ap.add_argument("--soak", type=int, default=1000, help="rolling reloads, and crash restarts, in the soak")
    ap.add_argument("--reload-runs", type=int, default=5, help="timed `pminit reload`s of 4 Node workers")
    ap.add_argument("--liveness-rounds", type=int, default=5)
    ap.add_argument("--no-install", action="store_true")
    ap.add_argument("--render-only", action="store_true",
                    help="re-render RESULTS.md, the README's blocks and the chart from bench/results.json")
    args = ap.parse_args()
    if args.render_only:
        res = json.load(open(RESULTS_JSON))
    else:
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGHUP, on_signal)
        res = measure(args)
    render(res)
    print(open(RESULTS_MD).read())


if __name__ == "__main__":
    main()
