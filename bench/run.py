#!/usr/bin/env python3
"""pminit against pm2, Node's cluster module and tini, in one run.

usage: python3 bench/run.py [--seconds S] [--workers N] [--no-install]

Installs what it needs (wrk, hyperfine, tini, dumb-init, catatonit from
Debian; pm2 and autocannon from npm, pinned in bench/package-lock.json;
matplotlib from PyPI), builds the static pminit, then measures on loopback,
every load bounded in time:

- req/s and p50/p99 latency, keep-alive and a new connection per request
  (two wrk processes, 64 connections in all), for the same app (bench/app.js) under: pminit -i N
  (shared and per-worker sockets), pm2-runtime -i N (pm2's cluster mode),
  Node's cluster module (bench/cluster.js), tini with one Node, and N
  independent Node processes on N ports (the upper bound: no init at all);
- failed requests during 5 rolling reloads under load (autocannon, with
  keep-alive and with a new connection per request): kill -HUP to pminit
  against `pm2 reload`;
- memory (RSS) of pminit with 4 workers against pm2-runtime, the cluster
  primary and tini; idle cost (CPU ticks, context switches over 10 s);
- start-up (`X -- /bin/true`, hyperfine) and binary size against
  tini-static, dumb-init and catatonit.

Writes bench/RESULTS.md, bench/results.json and bench/chart.png.
"""
import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from layouts import free_port, parse_wrk

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
APP = os.path.join(HERE, "app.js")
BIN = os.path.join(HERE, "node_modules", ".bin")
DEBIAN = ["wrk", "hyperfine", "tini", "dumb-init", "catatonit"]


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
    """A process whose output lines we read in threads."""

    def __init__(self, cmd, env=None):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, **(env or {})), start_new_session=True)
        self.pid = self.proc.pid
        self.lines = []
        self.cond = threading.Condition()
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream):
        for line in stream:
            with self.cond:
                self.lines.append(line.rstrip())
                self.cond.notify_all()

    def wait_for(self, text, count=1, timeout=30):
        end = time.monotonic() + timeout
        with self.cond:
            while sum(1 for l in self.lines if text in l) < count:
                left = end - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"no {text!r} x{count}; output:\n" + "\n".join(self.lines[-30:]))
                self.cond.wait(left)

    def stop(self):
        try:
            os.kill(self.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


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
    latencies averaged."""
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


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_and_switches(pid):
    stat = open(f"/proc/{pid}/stat").read()
    fields = stat[stat.rfind(")") + 2:].split()
    ticks = int(fields[11]) + int(fields[12])
    switches = 0
    for line in open(f"/proc/{pid}/status"):
        if "ctxt_switches" in line:
            switches += int(line.split()[1])
    return ticks, switches


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
            log(f"{name:18} keep-alive {ka['rps']:8.0f} req/s   new conn {new['rps']:8.0f} req/s")
        finally:
            s.stop()
    return rows


def autocannon(port, close):
    """autocannon -c 8 until SIGINT (bench/load.js)."""
    cmd = ["node", os.path.join(HERE, "load.js"), f"http://127.0.0.1:{port}/", "8"]
    if close:
        cmd.append("close")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def reloads(pminit, workers, pm2_home, count=5):
    """Failed requests while `count` rolling reloads run under load, for an
    app with a well-behaved drain (bench/app.js) and one with no signal
    handler at all (bench/plain.js)."""
    out = {}
    for app in (APP, os.path.join(HERE, "plain.js")):
        for name in ["pminit shared", "pm2 cluster"]:
            for close in (False, True):
                key = (f"{name}, {os.path.basename(app)}, "
                       f"{'new conn' if close else 'keep-alive'}")
                out[key] = reload_cell(name, app, close, pminit, workers, pm2_home, count)
                log(f"{key:40} {out[key]['failed']} failed of {out[key]['requests']}")
    return out


def reload_cell(name, app, close, pminit, workers, pm2_home, count):
    s = start(name, pminit, workers, pm2_home, app)
    try:
        load = autocannon(s.ports[0], close)  # until SIGINT, once the reloads are done
        time.sleep(1)  # bench: let the load reach full speed before the first reload
        for g in range(1, count + 1):
            if name.startswith("pminit"):
                os.kill(s.manager, signal.SIGHUP)
                s.procs[0].wait_for(f"reload to generation {g} finished")
            else:
                subprocess.run([os.path.join(BIN, "pm2"), "reload", "app"], check=True,
                               capture_output=True, env=dict(os.environ, PM2_HOME=pm2_home))
        # bench: pm2 reload returns before its old workers are gone; give
        # their requests time to end (or fail) before the count.
        time.sleep(2)
        load.send_signal(signal.SIGINT)
        r = json.loads(load.communicate(timeout=60)[0])
        return {"requests": r["requests"]["total"], "failed": r["errors"] + r["timeouts"] + r["non2xx"],
                "errors": r["errors"], "timeouts": r["timeouts"], "non2xx": r["non2xx"]}
    finally:
        s.stop()


def memory_and_idle(pminit, pm2_home, idle_seconds):
    out = {}
    for name in ["pminit shared", "pm2 cluster", "node cluster", "tini + 1 node"]:
        s = start(name, pminit, 1 if name.startswith("tini") else 4, pm2_home)
        try:
            time.sleep(1)  # bench: let start-up work settle before sampling
            t0, c0 = cpu_and_switches(s.manager)
            time.sleep(idle_seconds)
            t1, c1 = cpu_and_switches(s.manager)
            out[name] = {"rss_kb": rss_kb(s.manager), "idle_ticks": t1 - t0, "idle_switches": c1 - c0}
            log(f"{name:18} rss {out[name]['rss_kb']} kB, idle {t1 - t0} ticks, {c1 - c0} switches")
        finally:
            s.stop()
    return out


def startup(pminit):
    cmds = {
        "pminit": f"{pminit} -- /bin/true",
        "tini-static": "tini-static -s -- /bin/true",
        "dumb-init": "dumb-init /bin/true",
        "catatonit": "catatonit -- /bin/true",
    }
    path = tempfile.mktemp(suffix=".json")
    subprocess.run(["hyperfine", "-N", "--warmup", "20", "--runs", "300", "--export-json", path,
                    *cmds.values()], check=True, capture_output=True)
    res = json.load(open(path))["results"]
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
    ax.set_title("Failed requests across 5 reloads")
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


def ratio(a, b):
    return a / b if b else float("inf")


def targets(res):
    t, r, m, st, sz = res["throughput"], res["reloads"], res["memory"], res["startup"], res["sizes"]
    p = t["pminit shared"]
    rows = []

    def row(what, value, target, ok, why=""):
        rows.append((what, value, target, "met" if ok else "missed", why))

    new_pm2 = ratio(p["new_conn"]["rps"], t["pm2 cluster"]["new_conn"]["rps"])
    row("new-connection req/s vs pm2 cluster", f"{new_pm2:.2f}x", ">= 1.6x", new_pm2 >= 1.6)
    new_ind = ratio(p["new_conn"]["rps"], t["independent"]["new_conn"]["rps"])
    row("new-connection req/s vs independent processes", f"{new_ind:.2f}x", ">= 0.95x", new_ind >= 0.95)
    ka_pm2 = ratio(p["keep_alive"]["rps"], t["pm2 cluster"]["keep_alive"]["rps"])
    row("keep-alive req/s vs pm2 cluster", f"{ka_pm2:.2f}x", ">= 1x", ka_pm2 >= 1.0)
    pm_failed = sum(v["failed"] for k, v in r.items() if k.startswith("pminit"))
    pm2_failed = sum(v["failed"] for k, v in r.items() if k.startswith("pm2"))
    row("failed requests across 5 reloads (pminit / pm2)", f"{pm_failed} / {pm2_failed}", "0", pm_failed == 0)
    rss = m["pminit shared"]["rss_kb"] / 1024
    row("pminit RSS with 4 workers", f"{rss:.2f} MiB", "<= 1.5 MB", m["pminit shared"]["rss_kb"] * 1024 <= 1.5e6)
    idle = m["pminit shared"]
    row("pminit wake-ups while idle (10 s)", f"{idle['idle_switches']} switches, {idle['idle_ticks']} ticks",
        "0", idle["idle_switches"] == 0 and idle["idle_ticks"] == 0)
    su = ratio(st["pminit"]["mean_ms"], st["tini-static"]["mean_ms"])
    row("start-up vs tini-static", f"{su:.2f}x", "<= 1.2x", su <= 1.2)
    b = sz["pminit"]["bytes"]
    row("binary size", f"{b:,} bytes", "<= 1.5 MB", b <= 1.5e6)
    return rows


def write_md(res, path):
    t, r, m, st, sz = res["throughput"], res["reloads"], res["memory"], res["startup"], res["sizes"]
    L = []
    L.append("# Benchmarks: pminit against pm2, Node's cluster module and tini\n")
    L.append(f"Made by `python3 bench/run.py --seconds {res['seconds']} --workers {res['workers']}` "
             f"on {res['machine']}. One run: every ratio compares numbers taken minutes apart on "
             "the same machine. All traffic on loopback; the load generator (two wrk processes "
             "of one thread and 32 connections each, or autocannon -c 8 for the reloads) shares the CPUs with the servers, so absolute "
             "numbers are low and differences of ~10% are noise.\n")
    L.append("![chart](chart.png)\n")
    L.append("## Targets\n")
    L.append("| what | measured | target | |\n|---|---|---|---|")
    for what, value, target, verdict, _ in targets(res):
        L.append(f"| {what} | {value} | {target} | {verdict} |")
    L.append("")
    L.append(f"## Throughput and latency ({res['workers']} workers, bench/app.js)\n")
    base = t["pminit shared"]
    L.append("| setup | keep-alive req/s | p50 / p99 ms | new conn req/s | p50 / p99 ms "
             "| pminit shared ÷ this (keep-alive / new conn) |")
    L.append("|---|---|---|---|---|---|")
    for name, v in t.items():
        ka, new = v["keep_alive"], v["new_conn"]
        L.append(f"| {name} | {ka['rps']:.0f} | {ka['p50']:.2f} / {ka['p99']:.2f} | {new['rps']:.0f} "
                 f"| {new['p50']:.2f} / {new['p99']:.2f} | {ratio(base['keep_alive']['rps'], ka['rps']):.2f} / "
                 f"{ratio(base['new_conn']['rps'], new['rps']):.2f} |")
    L.append("\n`tini + 1 node` runs one worker; `independent` is N plain Node processes on N "
             "ports, each loaded by its own wrk (the one-port setups get two wrk processes on "
             "their one port, so the load generator is the same everywhere; req/s summed, "
             "latencies averaged): the bound with no init and no shared socket at all.\n")
    L.append("## Failed requests during 5 rolling reloads under load\n")
    L.append("| setup and load | requests | failed | errors / timeouts / non-2xx |\n|---|---|---|---|")
    for k, v in r.items():
        L.append(f"| {k} | {v['requests']} | {v['failed']} | {v['errors']} / {v['timeouts']} / {v['non2xx']} |")
    L.append("\npminit: `kill -HUP`, waiting for each reload to finish; pm2: `pm2 reload app` "
             "against pm2-runtime. autocannon -c 8 for the whole run. `app.js` drains on SIGINT "
             "as the README describes (stop accepting, `Connection: close`, exit when done); "
             "`plain.js` has no signal handler at all, like most apps: pminit's preload drains "
             "it, pm2 has nothing that does.\n")
    L.append("## Memory and idle cost of the managing process\n")
    L.append("| process | RSS | CPU ticks in 10 s idle | context switches in 10 s idle |\n|---|---|---|---|")
    for k, v in m.items():
        L.append(f"| {k} | {v['rss_kb']} kB | {v['idle_ticks']} | {v['idle_switches']} |")
    L.append("\npminit, pm2-runtime (its daemon runs in the same process) and the cluster primary "
             "with 4 workers; tini with one. The workers themselves (~45 MB each) are the same "
             "Node processes everywhere and are not counted.\n")
    L.append("## Start-up and size\n")
    L.append("| init | `X -- /bin/true` mean ± sd (hyperfine, 300 runs) | ÷ tini-static | binary bytes | static |")
    L.append("|---|---|---|---|---|")
    for k in st:
        L.append(f"| {k} | {st[k]['mean_ms']:.2f} ± {st[k]['stddev_ms']:.2f} ms "
                 f"| {ratio(st[k]['mean_ms'], st['tini-static']['mean_ms']):.2f} "
                 f"| {sz[k]['bytes']:,} | {'yes' if sz[k]['static'] else 'no'} |")
    L.append("")
    open(path, "w").write("\n".join(L) + "\n")


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    pm2 = json.load(open(os.path.join(HERE, "node_modules", "pm2", "package.json")))["version"]
    return (f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, Node {node}, pm2 {pm2}, "
            f"{time.strftime('%Y-%m-%d')}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5, help="per throughput cell")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--idle-seconds", type=int, default=10)
    ap.add_argument("--no-install", action="store_true")
    args = ap.parse_args()
    if not args.no_install:
        install()
    pminit = build()
    pm2_home = tempfile.mkdtemp(prefix="pminit-bench-pm2-")
    try:
        res = {"seconds": args.seconds, "workers": args.workers, "machine": machine()}
        log("== sizes, start-up")
        res["sizes"] = sizes(pminit)
        res["startup"] = startup(pminit)
        log("== throughput")
        res["throughput"] = throughput(pminit, args.workers, args.seconds, pm2_home)
        log("== reloads")
        res["reloads"] = reloads(pminit, args.workers, pm2_home)
        log("== memory, idle")
        res["memory"] = memory_and_idle(pminit, pm2_home, args.idle_seconds)
    finally:
        subprocess.run([os.path.join(BIN, "pm2"), "kill"], capture_output=True,
                       env=dict(os.environ, PM2_HOME=pm2_home))
        shutil.rmtree(pm2_home, ignore_errors=True)
    json.dump(res, open(os.path.join(HERE, "results.json"), "w"), indent=1)
    write_md(res, os.path.join(HERE, "RESULTS.md"))
    chart(res, os.path.join(HERE, "chart.png"))
    print(open(os.path.join(HERE, "RESULTS.md")).read())


if __name__ == "__main__":
    main()
