#!/usr/bin/env python3
"""What a restart of lainlet costs etcd, with and without the state file (issue 20).

Starts Debian's etcd 3.4 (--enable-v2) on loopback, loads the generated 1,000-app cluster
with `lainlet-load --mode load-demo`, and for each store (v2, v3) and each number of changes
made while lainlet is down (0, 10, 2000) restarts lainlet once without a state file and once
from one. lainlet reaches etcd through a byte-counting TCP relay, so "bytes from etcd" is
everything etcd sent lainlet from its start until it served etcd's revision of before the
start (both stores alike). "serving after": the first 200 of a view; "/healthz ok": proven
against etcd; "caught up": serving etcd's revision.

    cargo build --release --bin lainlet --bin lainlet-load
    scripts/bench_restart.py [--apps 1000] [--changes 0,10,2000] [--stores v2,v3]

Prints one Markdown table row per run.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
import base64

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Relay:
    """Forwards 127.0.0.1:port to etcd and counts the bytes etcd sends."""

    def __init__(self, target):
        self.target = target
        self.down = 0
        self.lock = threading.Lock()
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(128)
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            c, _ = self.srv.accept()
            u = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self.pump, args=(c, u, False), daemon=True).start()
            threading.Thread(target=self.pump, args=(u, c, True), daemon=True).start()

    def pump(self, src, dst, count):
        try:
            while True:
                b = src.recv(65536)
                if not b:
                    break
                if count:
                    with self.lock:
                        self.down += len(b)
                dst.sendall(b)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def take(self):
        with self.lock:
            n, self.down = self.down, 0
        return n


def http(port, path, method="GET", body=None, timeout=2):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def put(etcd_port, store, key, value):
    if store == "v3":
        b = json.dumps({"key": base64.b64encode(key.encode()).decode(),
                        "value": base64.b64encode(value.encode()).decode()}).encode()
        http(etcd_port, "/v3/kv/put", "POST", b)
    else:
        http(etcd_port, f"/v2/keys{key}", "PUT",
             urllib.parse.urlencode({"value": value}).encode())


def etcd_revision(etcd_port, store):
    if store == "v3":
        b = json.dumps({"key": base64.b64encode(b"/lain/").decode(), "limit": 1}).encode()
        status, body = http(etcd_port, "/v3/kv/range", "POST", b)
        return int(json.loads(body)["header"]["revision"])
    req = urllib.request.Request(f"http://127.0.0.1:{etcd_port}/v2/keys/lain/config")
    with urllib.request.urlopen(req, timeout=2) as r:
        return int(r.headers["X-Etcd-Index"])


def caught_up(web, revision, t0):
    """Seconds from t0 until lainlet serves `revision`."""
    while time.monotonic() - t0 < 120:
        status, body = http(web, "/healthz", timeout=1)
        if status == 200 and json.loads(body).get("revision", 0) >= revision:
            return time.monotonic() - t0
        time.sleep(0.005)
    return float("nan")


def start_lainlet(relay_port, store, state, log):
    web = free_port()
    # An empty --state-file: no file, and no raw values kept (the RSS without the feature).
    args = [os.path.join(ROOT, "target/release/lainlet"), f"--web=127.0.0.1:{web}",
            f"--etcd=127.0.0.1:{relay_port}", "--ip=127.0.0.1", "--etcd-api", store,
            "--state-file", state]
    t0 = time.monotonic()
    proc = subprocess.Popen(args, stdout=log, stderr=log)
    served = ok = None
    while time.monotonic() - t0 < 120:
        if served is None and http(web, "/v2/configwatcher?target=domain", timeout=1)[0] == 200:
            served = time.monotonic() - t0
        status, body = http(web, "/healthz", timeout=1)
        if status == 200 and b'"ok"' in body:
            ok = time.monotonic() - t0
            if served is None:
                served = ok
            break
        time.sleep(0.005)
    return proc, web, served, ok, t0


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def cpu_seconds(pid):
    """User + system CPU time of process `pid`, in seconds."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def herd(a, client, relay, tmp, log, etcd_pid):
    """N lainlets stopped together, 10 changes, started together: bytes etcd sent until all
    served etcd's revision, and the time until the last one did."""
    print("| store | lainlets | state file | bytes from etcd | etcd CPU | all caught up after |")
    print("| --- | --- | --- | --- | --- | --- |")
    for store in a.stores.split(","):
        subprocess.run([os.path.join(ROOT, "target/release/lainlet-load"), "--mode", "load-demo",
                        "--etcd", f"127.0.0.1:{client}", "--etcd-api", store,
                        "--preload-apps", str(a.apps)], check=True, stdout=log, stderr=log)
        for with_file in (False, True):
            states = [os.path.join(tmp, f"herd-{store}-{i}") if with_file else "" for i in range(a.herd)]
            if with_file:
                for st in states:
                    proc, *_ = start_lainlet(relay.port, store, st, log)
                    stop(proc)
            for i in range(10):
                put(client, store, f"/lain/config/bench/h{i}", f"v{i}-{time.time()}")
            target = etcd_revision(client, store)
            relay.take()
            cpu0 = cpu_seconds(etcd_pid)
            t0 = time.monotonic()
            webs, procs = [], []
            for st in states:
                web = free_port()
                args = [os.path.join(ROOT, "target/release/lainlet"), f"--web=127.0.0.1:{web}",
                        f"--etcd=127.0.0.1:{relay.port}", "--ip=127.0.0.1", "--etcd-api", store,
                        "--state-file", st]
                procs.append(subprocess.Popen(args, stdout=log, stderr=log))
                webs.append(web)
            last = max(caught_up(w, target, t0) for w in webs)
            sent = relay.take()
            cpu = cpu_seconds(etcd_pid) - cpu0
            for proc in procs:
                stop(proc)
            print(f"| {store} | {a.herd} | {'yes' if with_file else 'no'} | {sent:,} | "
                  f"{cpu:.2f} s | {last * 1000:.0f} ms |", flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--apps", type=int, default=1000)
    p.add_argument("--changes", default="0,10,2000")
    p.add_argument("--stores", default="v3,v2")
    p.add_argument("--herd", type=int, default=0,
                   help="instead: N lainlets restarted at the same moment (10 changes while down)")
    a = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="lainlet-bench-restart-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    log = open(os.path.join(tmp, "log"), "ab")
    client, peer = free_port(), free_port()
    etcd = subprocess.Popen(["etcd", "--name", "b", "--data-dir", os.path.join(tmp, "etcd"),
                             "--listen-client-urls", f"http://127.0.0.1:{client}",
                             "--advertise-client-urls", f"http://127.0.0.1:{client}",
                             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                             "--initial-cluster", f"b=http://127.0.0.1:{peer}",
                             "--enable-v2=true"], stdout=log, stderr=log)
    try:
        for _ in range(200):
            if http(client, "/health")[0] == 200:
                break
            time.sleep(0.05)
        relay = Relay(client)
        if a.herd:
            return herd(a, client, relay, tmp, log, etcd.pid)
        print("| store | changes while down | state file | bytes from etcd | serving after | /healthz ok after | caught up after | snapshots read | lainlet RSS |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for store in a.stores.split(","):
            subprocess.run([os.path.join(ROOT, "target/release/lainlet-load"), "--mode", "load-demo",
                            "--etcd", f"127.0.0.1:{client}", "--etcd-api", store,
                            "--preload-apps", str(a.apps)], check=True, stdout=log, stderr=log)
            for n in [int(x) for x in a.changes.split(",")]:
                for with_file in (False, True):
                    state = os.path.join(tmp, f"state-{store}-{n}") if with_file else ""
                    if with_file:
                        proc, *_ = start_lainlet(relay.port, store, state, log)
                        time.sleep(0.5)
                        stop(proc)
                    for i in range(n):
                        put(client, store, f"/lain/config/bench/k{i % 500}", f"v{i}-{time.time()}")
                    target = etcd_revision(client, store)
                    relay.take()
                    proc, web, served, ok, t0 = start_lainlet(relay.port, store, state, log)
                    current = caught_up(web, target, t0)
                    sent = relay.take()
                    rss = next((int(l.split()[1]) for l in open(f"/proc/{proc.pid}/status")
                                if l.startswith("VmRSS:")), 0) / 1024
                    metrics = http(web, "/metrics")[1].decode()
                    snaps = next((l.split()[1] for l in metrics.splitlines()
                                  if l.startswith("lainlet_snapshots_total ")), "?")
                    stop(proc)
                    print(f"| {store} | {n} | {'yes' if with_file else 'no'} | {sent:,} | "
                          f"{served * 1000:.0f} ms | {ok * 1000:.0f} ms | {current * 1000:.0f} ms | {snaps} | {rss:.1f} MiB |",
                          flush=True)
    finally:
        etcd.send_signal(signal.SIGTERM)
        etcd.wait(timeout=30)


if __name__ == "__main__":
    import urllib.parse
    main()
