#!/usr/bin/env python3
"""Socket layouts compared: shared vs per-worker, with real wrk load on
loopback, bounded in time. Writes bench/LAYOUTS.md.

usage: python3 bench/layouts.py [--pminit PATH] [--seconds S]

For each layout and worker count it measures:
- req/s and p50/p99 with keep-alive (wrk -c 64);
- req/s and p50/p99 with a new connection per request (Connection: close);
- spread: requests served by the busiest worker / by the idlest one;
- during a SIGKILL of one worker (and its replacement): p99, errors.
"""
import argparse
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Pminit:
    """pminit running the bench app; reads its stdout lines in a thread."""

    def __init__(self, binary, layout, workers, port):
        env = dict(os.environ, PORT=str(port))
        self.proc = subprocess.Popen(
            [binary, "-i", str(workers), "-l", f"127.0.0.1:{port}",
             "--socket-layout", layout, "--kill-timeout", "3s",
             "--", "node", os.path.join(HERE, "app.js")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.lines = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True).start()

    def _read(self, stream):
        for line in stream:
            with self.cond:
                self.lines.append(line.strip())
                self.cond.notify_all()

    def wait_for(self, pred, count=1, timeout=20):
        end = time.monotonic() + timeout
        with self.cond:
            while sum(1 for l in self.lines if pred(l)) < count:
                left = end - time.monotonic()
                if left <= 0:
                    raise RuntimeError("timed out; output:\n" + "\n".join(self.lines))
                self.cond.wait(left)
            return [l for l in self.lines if pred(l)]

    def worker_pids(self):
        return [int(re.search(r"pid=(\d+)", l).group(1))
                for l in self.lines if l.startswith("listening pid=")]

    def spread(self):
        """Asks every worker for its count; returns the counts."""
        mark = len(self.lines)
        self.proc.send_signal(signal.SIGUSR2)
        alive = len(self.worker_pids())
        self.wait_for(lambda l: l.startswith("served pid="), count=self._served() + alive)
        counts = {}
        for l in self.lines[mark:]:
            m = re.match(r"served pid=(\d+) n=(\d+)", l)
            if m:
                counts[int(m.group(1))] = int(m.group(2))
        return counts

    def _served(self):
        return sum(1 for l in self.lines if l.startswith("served pid="))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wrk(port, seconds, conns, close, during=None):
    cmd = ["wrk", "-t", "2", "-c", str(conns), "-d", f"{seconds}s", "--latency",
           "--timeout", "5s"]
    if close:
        cmd += ["-H", "Connection: close"]
    cmd.append(f"http://127.0.0.1:{port}/")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    if during:
        during()
    out, _ = p.communicate(timeout=seconds + 30)
    return parse_wrk(out)


def ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(out):
    r = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for pct in ("50", "99"):
        m = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)\b", out)
        r[f"p{pct}"] = ms(*m.groups()) if m else float("nan")
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["errors"] = sum(map(int, m.groups())) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["errors"] += int(m.group(1)) if m else 0
    r["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
    return r


def measure(binary, layout, workers, seconds):
    port = free_port()
    pm = Pminit(binary, layout, workers, port)
    try:
        pm.wait_for(lambda l: l.startswith("listening pid="), count=workers)
        wrk(port, 1, 16, False)  # warm-up
        pm.spread()              # reset baseline
        base = pm.spread()
        def spread_of(before, after):
            served = [after[pid] - before.get(pid, 0) for pid in after]
            # A worker that served nothing: infinitely uneven.
            return max(served) / min(served) if min(served) > 0 else float("inf")

        ka = wrk(port, seconds, 64, False)
        mid = pm.spread()
        new = wrk(port, seconds, 64, True)
        end = pm.spread()
        spread_ka = spread_of(base, mid)
        spread_new = spread_of(mid, end)

        def kill_one():
            time.sleep(seconds / 3)  # let the load settle before the kill (bench, not a test)
            os.kill(pm.worker_pids()[0], signal.SIGKILL)

        killed = wrk(port, seconds, 64, True, during=kill_one)
        pm.wait_for(lambda l: l.startswith("listening pid="), count=workers + 1)
        return {"ka": ka, "new": new, "spread_ka": spread_ka, "spread_new": spread_new, "killed": killed}
    finally:
        pm.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pminit", default=os.path.join(ROOT, "target/release/pminit"))
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(HERE, "LAYOUTS.md"))
    args = ap.parse_args()
    rows = []
    for workers in (2, 4):
        for layout in ("shared", "per-worker"):
            r = measure(args.pminit, layout, workers, args.seconds)
            rows.append((layout, workers, r))
            print(layout, workers, r, file=sys.stderr)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    with open(args.out, "w") as f:
        f.write("# Socket layouts: shared vs per-worker\n\n")
        f.write(f"Measured by `python3 bench/layouts.py` on {platform.node() or 'this machine'}: "
                f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, Node {node}, "
                f"wrk -t 2 -c 64, {args.seconds} s per cell, all on loopback. "
                "The load generator shares the CPUs with the workers.\n\n")
        f.write("| layout | workers | keep-alive req/s | p50 / p99 ms | new conn req/s | p50 / p99 ms "
                "| spread keep-alive / new conn (max/min served) | during SIGKILL: p99 ms | failed |\n")
        f.write("|---|---|---|---|---|---|---|---|---|\n")
        for layout, workers, r in rows:
            ka, new, k = r["ka"], r["new"], r["killed"]
            f.write(f"| {layout} | {workers} | {ka['rps']:.0f} | {ka['p50']:.2f} / {ka['p99']:.2f} "
                    f"| {new['rps']:.0f} | {new['p50']:.2f} / {new['p99']:.2f} | {r['spread_ka']:.2f} / {r['spread_new']:.2f} "
                    f"| {k['p99']:.2f} | {k['errors']} of {k['requests']} |\n")
    print(open(args.out).read())


if __name__ == "__main__":
    main()
