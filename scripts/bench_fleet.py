#!/usr/bin/env python3
"""The fleet's costs and delays (issue 21's targets), with three lainlets on one etcd.

Setups: etcd 3.4's v3 store, and an etcd 2.3.7 member behind an etcd 2.3.7 `--proxy on`
(v2, what LAIN nodes run; lainlet reads the proxy). Three lainlets (`--announce
--announce-every 2`, TTL 6 s) on 127.0.0.11-13. Measured:

  writes    etcd writes per lainlet per second in steady state (no change to /lain/): the
            store's revision (v3) or index (v2) over 60 s, divided by 3; v3 lease keep-alives
            are not writes and are reported apart (from lainlet_fleet_heartbeats_total)
  crash     kill -9 of one lainlet → gone from another's /fleet (5 times; target ≤ TTL + 1 s)
  complete  a write at R → /fleet?revision=R&watch=1 on one lainlet says complete: measured
            from the moment etcd delivered the last lainlet's announcement of ≥ R to a watch of
            this script (target ≤ 100 ms), and from the write (10 writes, 3 s apart)

Usage: scripts/bench_fleet.py [--setups v3,v2-proxy]
Env: LAINLET_BIN (target/release/lainlet), ETCD3 (etcd on PATH), ETCD2
(target/etcd-2.3.7/etcd). Everything runs on loopback and stops by itself.
"""

import argparse
import base64
import http.client as httpc
import json
import os
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
NAMES = ["bench-a", "bench-b", "bench-c"]
EVERY = 2
TTL = 6


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, limit, step=0.005):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            if pred():
                return True
        except (OSError, ValueError):  # not up yet, or `503` text while starting
            pass
        time.sleep(step)
    return False


def http(host, port, method, path, body=None, headers=None, timeout=5.0):
    c = httpc.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def b64(s):
    return base64.b64encode(s.encode()).decode()


class Etcd:
    """A v3 member (3.4) or a 2.3.7 member with a proxy in front; `port` is what lainlet and
    the script read, `member` what the script writes to."""

    def __init__(self, setup, workdir):
        self.setup, self.procs = setup, []
        client, peer = free_port(), free_port()
        etcd = os.environ.get("ETCD3", "etcd") if setup == "v3" else os.environ.get(
            "ETCD2", os.path.join(ROOT, "target/etcd-2.3.7/etcd"))
        self.member = client
        args = [etcd, "--name", "m", "--data-dir", os.path.join(workdir, "m"),
                "--listen-client-urls", f"http://127.0.0.1:{client}",
                "--advertise-client-urls", f"http://127.0.0.1:{client}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", f"m=http://127.0.0.1:{peer}"]
        self.procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        assert wait_until(lambda: http("127.0.0.1", client, "GET", "/version")[0] == 200, 20)
        self.port = client
        if setup == "v2-proxy":
            self.port = free_port()
            self.procs.append(subprocess.Popen(
                [etcd, "--proxy", "on", "--data-dir", os.path.join(workdir, "p"),
                 "--listen-client-urls", f"http://127.0.0.1:{self.port}",
                 "--initial-cluster", f"m=http://127.0.0.1:{peer}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            assert wait_until(lambda: http("127.0.0.1", self.port, "GET", "/v2/keys/")[0] == 200, 20)

    def put(self, key, value):
        """Writes through the member; the revision (v2: index) of the write."""
        if self.setup == "v3":
            body = json.dumps({"key": b64(key), "value": b64(value)})
            _, _, out = http("127.0.0.1", self.member, "POST", "/v3/kv/put", body)
            return int(json.loads(out)["header"]["revision"])
        body = urllib.parse.urlencode({"value": value})
        _, _, out = http("127.0.0.1", self.member, "PUT", f"/v2/keys{key}", body,
                         {"Content-Type": "application/x-www-form-urlencoded"})
        return json.loads(out)["node"]["modifiedIndex"]

    def revision(self):
        if self.setup == "v3":
            _, _, out = http("127.0.0.1", self.member, "POST", "/v3/kv/range",
                             json.dumps({"key": b64("/lain/"), "keys_only": True, "limit": 1}))
            return int(json.loads(out)["header"]["revision"])
        _, headers, _ = http("127.0.0.1", self.member, "GET", "/v2/keys/lain")
        return int(headers["X-Etcd-Index"])

    def watch_announcements(self, seen, stop):
        """Records (arrival time, host, announced revision) of every fleet put etcd sends."""
        prefix = "/lain/lainlet/nodes/"
        if self.setup == "v3":
            body = json.dumps({"create_request": {"key": b64(prefix), "range_end": b64("/lain/lainlet/nodes0")}})
            c = httpc.HTTPConnection("127.0.0.1", self.member, timeout=None)
            c.request("POST", "/v3/watch", body)
            r = c.getresponse()
            while not stop.is_set():
                line = r.readline()
                if not line:
                    return
                for ev in json.loads(line).get("result", {}).get("events", []):
                    if ev.get("type") == "DELETE":
                        continue
                    kv = ev["kv"]
                    host = base64.b64decode(kv["key"]).decode()[len(prefix):]
                    value = json.loads(base64.b64decode(kv.get("value", "")))
                    seen.append((time.monotonic(), host, value["revision"]))
            return
        index = self.revision() + 1
        while not stop.is_set():
            try:
                _, _, out = http("127.0.0.1", self.member, "GET",
                                 f"/v2/keys/lain/lainlet/nodes?wait=true&recursive=true&waitIndex={index}",
                                 timeout=3)
            except OSError:
                continue
            ev = json.loads(out)
            if "node" not in ev:
                index = ev.get("index", index) + 1
                continue
            index = ev["node"]["modifiedIndex"] + 1
            if ev["action"] in ("set", "create", "update") and "value" in ev["node"]:
                host = ev["node"]["key"][len(prefix):]
                seen.append((time.monotonic(), host, json.loads(ev["node"]["value"])["revision"]))

    def stop(self):
        for p in self.procs:
            p.kill()
            p.wait()


def start_lainlet(etcd, i, workdir):
    ip = f"127.0.0.{11 + i}"
    port = free_port()
    binary = os.environ.get("LAINLET_BIN", os.path.join(ROOT, "target/release/lainlet"))
    store = "v3" if etcd.setup == "v3" else "v2"
    p = subprocess.Popen([binary, "--web", f"{ip}:{port}", "--etcd", f"127.0.0.1:{etcd.port}",
                          "--etcd-api", store, "--ip", ip, "--hostname", NAMES[i], "--announce",
                          "--announce-every", str(EVERY), "--state-file", ""],
                         stdout=subprocess.DEVNULL, stderr=open(os.path.join(workdir, f"l{i}.log"), "w"))
    return p, ip, port


def fleet(ip, port, query=""):
    return json.loads(http(ip, port, "GET", f"/fleet{query}")[2])


def metric(ip, port, name):
    text = http(ip, port, "GET", "/metrics")[2].decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def members(ip, port):
    return sorted(fleet(ip, port).get("members", {}))


def sse_complete(ip, port, revision, done):
    """Sets done[0] to the time /fleet?revision=R&watch=1 first says complete."""
    c = httpc.HTTPConnection(ip, port, timeout=30)
    c.request("GET", f"/fleet?revision={revision}&watch=1")
    r = c.getresponse()
    while True:
        line = r.readline()
        if not line:
            return
        if line.startswith(b"data: ") and b'"complete":true' in line:
            done[0] = time.monotonic()
            c.close()
            return


def run(setup):
    workdir = tempfile.mkdtemp(prefix=f"bench-fleet-{setup}-")
    etcd = Etcd(setup, workdir)
    nodes = []
    try:
        etcd.put("/lain/config/vip", "192.168.77.201")
        nodes = [start_lainlet(etcd, i, workdir) for i in range(3)]
        a = nodes[0][1:]
        assert wait_until(lambda: members(*a) == NAMES, 30), members(*a)
        time.sleep(2 * EVERY + 1)

        # Steady state.
        beats = lambda: sum(metric(ip, port, 'lainlet_fleet_heartbeats_total{kind="refresh"}')
                            + metric(ip, port, 'lainlet_fleet_heartbeats_total{kind="put"}')
                            for _, ip, port in nodes)
        r0, b0, t0 = etcd.revision(), beats(), time.monotonic()
        time.sleep(60)
        r1, b1, t1 = etcd.revision(), beats(), time.monotonic()
        writes = (r1 - r0) / (t1 - t0) / 3
        heartbeats = (b1 - b0) / (t1 - t0) / 3
        print(f"{setup}: steady state: {writes:.3f} etcd writes/s per lainlet "
              f"({r1 - r0} in {t1 - t0:.0f} s for 3); heartbeat calls {heartbeats:.3f}/s per lainlet")

        # ?revision=R completes.
        seen, stop = [], threading.Event()
        watcher = threading.Thread(target=etcd.watch_announcements, args=(seen, stop), daemon=True)
        watcher.start()
        time.sleep(0.5)
        after_last, after_write = [], []
        for n in range(10):
            t_write = time.monotonic()
            r = etcd.put("/lain/config/bench", str(n))
            done = [None]
            t = threading.Thread(target=sse_complete, args=(*a, r, done), daemon=True)
            t.start()
            t.join(15)
            assert done[0], f"/fleet?revision={r} never complete"
            last = {}
            for at, host, rev in list(seen):
                if rev >= r and host not in last:
                    last[host] = at
            if len(last) == 3:
                after_last.append(done[0] - max(last.values()))
            after_write.append(done[0] - t_write)
            time.sleep(3)
        stop.set()
        ms = lambda xs: f"p50 {statistics.median(xs) * 1000:.1f} ms, max {max(xs) * 1000:.1f} ms"
        print(f"{setup}: ?revision=R complete after the last announcement: {ms(after_last)} "
              f"({len(after_last)} of 10 seen); after the write: {ms(after_write)}")

        # Crashes.
        gone = []
        for n in range(5):
            p, ip, port = nodes[2]
            assert wait_until(lambda: members(*a) == NAMES, 30)
            time.sleep(EVERY + 0.5)
            p.send_signal(signal.SIGKILL)
            p.wait()
            t_kill = time.monotonic()
            assert wait_until(lambda: NAMES[2] not in members(*a), TTL + 10, step=0.02)
            gone.append(time.monotonic() - t_kill)
            nodes[2] = start_lainlet(etcd, 2, workdir)
        print(f"{setup}: kill -9 → gone from /fleet: min {min(gone):.2f} s, median "
              f"{statistics.median(gone):.2f} s, max {max(gone):.2f} s (TTL {TTL} s; target ≤ {TTL + 1} s)")
    finally:
        for p, _, _ in nodes:
            p.kill()
            p.wait()
        etcd.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setups", default="v3,v2-proxy")
    args = ap.parse_args()
    for setup in args.setups.split(","):
        run(setup)


if __name__ == "__main__":
    sys.exit(main())
