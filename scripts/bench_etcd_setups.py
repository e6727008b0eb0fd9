#!/usr/bin/env python3
"""How lainlet (and the original) follow etcd on each store LAIN nodes use, side by side.

Setups: etcd 3.4 with --enable-v2 (v2 store), an etcd 2.3.7 member, an etcd 2.3.7 member
behind an etcd 2.3.7 `--proxy on` (what most LAIN nodes run, and where lainlet connects),
and etcd 3.4's v3 store. For each setup and data set, each binary is started against it
(the original only on v2: it reads nothing else) and measured:

  ready    time from the process's start to its first answer holding the data (GET)
  change   one change on a quiet cluster: from just before the write is sent to etcd (so
           etcd's commit is included, as in lainlet-load) until the SSE frame holding it
           arrives at a watcher (20 changes, 0.5 s apart: p50, p99, max)
  reads    etcd reads per change besides the watch during those 20 (2.3.7 only: its
           member's etcd_http_received_total for GET and QGET, which leaves watches out)
  storm    2,000 writes as fast as one writer goes (one key, values 0..1999): time from
           the last write's acknowledgement until a GET answers the last value
  restore  etcd stopped, its data dir replaced by a copy taken 5 writes earlier, started
           again and written once: time from etcd (the endpoint the binary uses) answering
           again until the binary serves etcd's state (the new write, not the lost ones)

Usage: scripts/bench_etcd_setups.py [--apps N] [--setups v2-3.4,v2-2.3.7,v2-proxy,v3]
Env: LAINLET_BIN (target/release/lainlet), ORIG_BIN (target/original/lainlet; skipped if
missing), ETCD3 (etcd on PATH), ETCD2 (target/etcd-2.3.7/etcd), LOAD_BIN
(target/release/lainlet-load, loads the data set). Everything runs on 127.0.0.1 and stops
by itself; bounded waits everywhere.
"""

import argparse
import http.client as httpc
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def now():
    return time.monotonic()


def wait_until(pred, limit, step=0.005):
    end = now() + limit
    while now() < end:
        try:
            if pred():
                return True
        except OSError:
            pass
        time.sleep(step)
    return False


def http(port, method, path, body=None, timeout=5.0):
    c = httpc.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {}
        if body is not None:
            body = urllib.parse.urlencode(body)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


class Etcd:
    """One etcd setup: a member (3.4 or 2.3.7), maybe behind a 2.3.7 proxy."""

    def __init__(self, setup, workdir):
        self.setup = setup
        self.dir = workdir
        self.member_port = free_port()
        self.peer_port = free_port()
        self.proxy_port = free_port() if setup == "v2-proxy" else None
        self.procs = {}
        self.v3 = setup == "v3"
        self.bin = os.environ.get("ETCD3", "etcd") if setup in ("v2-3.4", "v3") else \
            os.environ.get("ETCD2", os.path.join(ROOT, "target/etcd-2.3.7/etcd"))

    def member_args(self):
        c, p = self.member_port, self.peer_port
        args = [self.bin, "--name", "m1", "--data-dir", os.path.join(self.dir, "m1"),
                "--listen-client-urls", f"http://127.0.0.1:{c}",
                "--advertise-client-urls", f"http://127.0.0.1:{c}",
                "--listen-peer-urls", f"http://127.0.0.1:{p}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{p}",
                "--initial-cluster", f"m1=http://127.0.0.1:{p}",
                "--initial-cluster-state", "new"]
        if self.setup in ("v2-3.4", "v3"):
            args += ["--enable-v2=true"]
        return args

    def start_member(self):
        log = open(os.path.join(self.dir, "m1.log"), "ab")
        self.procs["m1"] = subprocess.Popen(self.member_args(), stdout=log, stderr=log)
        ok = wait_until(lambda: http(self.member_port, "GET", "/v2/keys/?quorum=true")[0]
                        in (200, 404), 30)
        if not ok:
            sys.exit(f"etcd ({self.setup}) did not start; see {self.dir}/m1.log")

    def start(self):
        self.start_member()
        if self.proxy_port:
            log = open(os.path.join(self.dir, "proxy.log"), "ab")
            args = [self.bin, "--proxy", "on", "--name", "proxy",
                    "--data-dir", os.path.join(self.dir, "proxy"),
                    "--listen-client-urls", f"http://127.0.0.1:{self.proxy_port}",
                    "--initial-cluster", f"m1=http://127.0.0.1:{self.peer_port}"]
            self.procs["proxy"] = subprocess.Popen(args, stdout=log, stderr=log)
            if not wait_until(self.answers, 30):
                sys.exit(f"etcd proxy did not start; see {self.dir}/proxy.log")

    def stop_member(self):
        p = self.procs.pop("m1")
        p.send_signal(signal.SIGTERM)
        p.wait(20)

    def stop(self):
        for p in self.procs.values():
            p.kill()
            p.wait()
        self.procs = {}

    @property
    def endpoint(self):
        """Where lainlet connects (the proxy, in the proxy setup)."""
        return self.proxy_port or self.member_port

    def answers(self):
        """Whether the endpoint lainlet uses answers a quorum read."""
        if self.v3:
            return http_v3(self.endpoint, "/v3/kv/range", {"key": b64("/lain/")})[0] == 200
        return http(self.endpoint, "GET", "/v2/keys/?quorum=true")[0] in (200, 404)

    def put(self, key, value):
        if self.v3:
            status, _ = http_v3(self.member_port, "/v3/kv/put",
                                {"key": b64(key), "value": b64(value)})
        else:
            status, _ = http(self.member_port, "PUT", "/v2/keys" + key, {"value": value})
        if status not in (200, 201):
            raise RuntimeError(f"put {key}: HTTP {status}")

    def reads(self):
        """The member's count of GET and QGET requests (etcd 2.3.7's metrics)."""
        if self.setup not in ("v2-2.3.7", "v2-proxy"):
            return None
        _, text = http(self.member_port, "GET", "/metrics")
        total = 0
        for line in text.decode().splitlines():
            if line.startswith("etcd_http_received_total{") and \
                    ('method="GET"' in line or 'method="QGET"' in line):
                total += float(line.rsplit(" ", 1)[1])
        return total


def b64(s):
    import base64
    return base64.b64encode(s.encode()).decode()


def http_v3(port, path, body):
    c = httpc.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("POST", path, body=json.dumps(body))
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


class Writer:
    """One kept-alive connection writing as fast as etcd acknowledges."""

    def __init__(self, etcd):
        self.etcd = etcd
        self.c = httpc.HTTPConnection("127.0.0.1", etcd.member_port, timeout=10)

    def put(self, key, value):
        if self.etcd.v3:
            body = json.dumps({"key": b64(key), "value": b64(value)})
            self.c.request("POST", "/v3/kv/put", body=body)
        else:
            self.c.request("PUT", "/v2/keys" + key, body=urllib.parse.urlencode({"value": value}),
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
        r = self.c.getresponse()
        r.read()
        if r.status not in (200, 201):
            raise RuntimeError(f"put {key}: HTTP {r.status}")


class SseReader(threading.Thread):
    """Reads one SSE stream, noting when each data line arrived."""

    def __init__(self, port, path):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
                          .encode())
        self.seen = []  # (time, data)
        self.lock = threading.Lock()
        self.start()

    def run(self):
        buf = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return
                t = now()
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.startswith(b"data:"):
                        with self.lock:
                            self.seen.append((t, line[5:].strip().decode(errors="replace")))
        except OSError:
            return

    def when(self, needle, limit):
        end = now() + limit
        while now() < end:
            with self.lock:
                for t, data in self.seen:
                    if needle in data:
                        return t
            time.sleep(0.001)
        return None

    def close(self):
        self.sock.close()


def start_binary(kind, etcd, workdir):
    port = free_port()
    grpc = free_port()
    log = open(os.path.join(workdir, f"{kind}.log"), "ab")
    if kind == "lainlet":
        binary = os.environ.get("LAINLET_BIN", os.path.join(ROOT, "target/release/lainlet"))
        args = [binary, f"-web=127.0.0.1:{port}", f"-grpc.addr=127.0.0.1:{grpc}",
                f"-etcd=127.0.0.1:{etcd.endpoint}", "-ip=127.0.0.1",
                "--etcd-api", "v3" if etcd.v3 else "v2"]
    else:
        binary = os.environ.get("ORIG_BIN", os.path.join(ROOT, "target/original/lainlet"))
        args = [binary, f"-web=127.0.0.1:{port}", f"-grpc.addr=127.0.0.1:{grpc}",
                f"-etcd=127.0.0.1:{etcd.endpoint}", "-ip=127.0.0.1"]
    t0 = now()
    # No state file: each start measures a full read (and runs never share /var/lib/lainlet).
    env = dict(os.environ, LAINLET_STATE_FILE=os.environ.get("LAINLET_STATE_FILE", ""))
    proc = subprocess.Popen(args, stdout=log, stderr=log, env=env)

    def holds_data():
        status, body = http(port, "GET", "/v2/configwatcher?target=vip", timeout=1)
        return status == 200 and b"vip" in body

    if not wait_until(holds_data, 60, step=0.002):
        proc.kill()
        sys.exit(f"{kind} did not serve within 60 s; see {workdir}/{kind}.log")
    return proc, port, now() - t0


def get_value(port, key):
    status, body = http(port, "GET", f"/v2/configwatcher?target={key}", timeout=2)
    if status != 200:
        return None
    return json.loads(body or b"{}").get(key)


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def measure(kind, etcd, workdir, changes):
    proc, port, ready = start_binary(kind, etcd, workdir)
    out = {"ready_ms": ready * 1000}
    try:
        # one change at a time on a quiet cluster
        reader = SseReader(port, "/v2/configwatcher?target=bench&watch=1")
        time.sleep(0.5)
        reads0 = etcd.reads()
        lat = []
        w = Writer(etcd)
        for i in range(changes):
            value = f"quiet-{i}-{time.time_ns()}"
            sent = now()
            w.put("/lain/config/bench", value)
            arrived = reader.when(value, 10)
            if arrived is None:
                lat.append(float("inf"))
            else:
                lat.append((arrived - sent) * 1000)
            time.sleep(0.5)
        reads1 = etcd.reads()
        reader.close()
        out["change_p50_ms"] = statistics.median(lat)
        out["change_p99_ms"] = pct(lat, 99)
        out["change_max_ms"] = max(lat)
        out["missed"] = sum(1 for x in lat if x == float("inf"))
        if reads0 is not None:
            out["reads_per_change"] = (reads1 - reads0) / changes
        # a storm: 2,000 writes as fast as one writer goes
        w = Writer(etcd)
        t_start = now()
        for i in range(2000):
            w.put("/lain/config/storm", f"s{i}")
        last_ack = now()
        ok = wait_until(lambda: get_value(port, "storm") == "s1999", 60, step=0.002)
        out["storm_write_s"] = last_ack - t_start
        out["storm_catchup_ms"] = (now() - last_ack) * 1000 if ok else float("inf")
    finally:
        proc.kill()
        proc.wait()
    return out


def measure_restore(kind, etcd, workdir):
    """Data dir restored from a copy 5 writes old; time until the binary serves etcd's state."""
    proc, port, _ = start_binary(kind, etcd, workdir)
    try:
        etcd.stop_member()
        backup = os.path.join(workdir, "m1-backup")
        shutil.rmtree(backup, ignore_errors=True)
        shutil.copytree(os.path.join(etcd.dir, "m1"), backup, symlinks=True)
        etcd.start_member()
        wait_until(etcd.answers, 30)
        for i in range(5):
            etcd.put(f"/lain/config/lost{i}", "x")
        if not wait_until(lambda: get_value(port, "lost4") == "x", 30):
            return {"restore_ms": float("nan"), "note": "never saw the writes before the restore"}
        etcd.stop_member()
        shutil.rmtree(os.path.join(etcd.dir, "m1"))
        shutil.copytree(backup, os.path.join(etcd.dir, "m1"), symlinks=True)
        etcd.start_member()
        if not wait_until(etcd.answers, 30):
            return {"restore_ms": float("nan"), "note": "the endpoint did not answer again"}
        back = now()
        etcd.put("/lain/config/restored", "yes")

        def served():
            s, body = http(port, "GET", "/v2/configwatcher", timeout=2)
            view = json.loads(body or b"{}")
            return view.get("restored") == "yes" and "lost0" not in view

        ok = wait_until(served, 30, step=0.005)
        return {"restore_ms": (now() - back) * 1000 if ok else float("inf")}
    finally:
        proc.kill()
        proc.wait()


def load_data(etcd, apps):
    load = os.environ.get("LOAD_BIN", os.path.join(ROOT, "target/release/lainlet-load"))
    args = [load, "--mode", "load-demo", "--etcd", f"127.0.0.1:{etcd.member_port}",
            "--etcd-api", "v3" if etcd.v3 else "v2"]
    if apps:
        args += ["--preload-apps", str(apps)]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    etcd.put("/lain/config/bench", "start")
    etcd.put("/lain/config/storm", "start")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--apps", type=int, default=0,
                    help="a generated cluster of this many apps instead of the demo data")
    ap.add_argument("--setups", default="v2-3.4,v2-2.3.7,v2-proxy,v3")
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--no-restore", action="store_true")
    opts = ap.parse_args()
    orig = os.environ.get("ORIG_BIN", os.path.join(ROOT, "target/original/lainlet"))
    rows = []
    for setup in opts.setups.split(","):
        kinds = ["lainlet"] + (["original"] if setup != "v3" and os.path.exists(orig) else [])
        for kind in kinds:
            workdir = tempfile.mkdtemp(prefix=f"bench-{setup}-{kind}-", dir="/dev/shm")
            etcd = Etcd(setup, workdir)
            try:
                etcd.start()
                load_data(etcd, opts.apps)
                row = {"setup": setup, "binary": kind}
                row.update(measure(kind, etcd, workdir, opts.changes))
                if not opts.no_restore:
                    row.update(measure_restore(kind, etcd, workdir))
                rows.append(row)
                print(json.dumps(row), flush=True)
            finally:
                etcd.stop()
                shutil.rmtree(workdir, ignore_errors=True)
    data = "the demo data" if not opts.apps else f"{opts.apps} apps"
    print(f"\n{data}; {opts.changes} changes 0.5 s apart; storm: 2,000 writes, one writer\n")
    cols = ["setup", "binary", "ready_ms", "change_p50_ms", "change_p99_ms", "change_max_ms",
            "reads_per_change", "storm_catchup_ms", "restore_ms"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "–")
            cells.append(f"{v:.1f}" if isinstance(v, float) else str(v))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
