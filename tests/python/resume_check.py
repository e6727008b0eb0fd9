"""Resuming watch clients that are not lainlet's own, for tests/tests/e2e_resume_clients.rs.

    resume_check.py sseclient STOP_FILE URL [URL ...]
    resume_check.py browser STOP_FILE PAGE_URL URL [URL ...]

Each URL is a lainlet watch with ``rev=1`` or ``diff=1`` (``diff=1`` in the URL: the client
applies ``patch`` events, otherwise it takes each ``init``/``update``/``delete`` as the view).

* ``sseclient``: webrouter's client library, ``sseclient==0.0.11`` from PyPI, one client per
  URL in its own thread. It reconnects by itself when a stream ends, sending
  ``Last-Event-ID: <the last id it saw>``; nothing here helps it (if its reconnect fails, the
  exception ends that watch and is reported). ``retry`` (its reconnect delay) is 300 ms instead
  of its 3 s default, to keep the test short. requests decodes a ``text/event-stream`` without
  a charset as ISO-8859-1 (lossless), so the data is re-decoded as UTF-8 here, as a client of
  lainlet must.
* ``browser``: headless Chromium (selenium, ``browser.py``) opens PAGE_URL (on the same
  origin as the watches, e.g. ``/healthz``), then runs ``new EventSource(url)`` for each URL in
  the page. The browser reconnects by itself after a stream ends (its own delay, about 3 s),
  sending ``Last-Event-ID``. Its events are collected in a JS array and read back every 50 ms.

Prints one JSON line per thing seen, flushed at once:

* ``{"watch": i, "connect": k}``: watch ``i`` (0-based, the URL's position) opens connection
  ``k`` (1-based): sseclient when it sends the request, the browser on ``open``;
* ``{"watch": i, "conn": k, "event": e, "id": id, "data": d, "state": s}``: an event on
  connection ``k``; ``id`` as the client reports it (sseclient: the frame's ``id:`` or null;
  browser: ``lastEventId``), ``state`` the view the client holds after applying it (null until
  it has one);
* ``{"watch": i, "fatal": text}``: the client gave up (an exception).

Runs until STOP_FILE exists (then exits 0), or for at most 120 s (exit 3).
"""

import json
import os
import sys
import threading
import time

LOCK = threading.Lock()
DEADLINE = time.monotonic() + 120


def emit(obj):
    with LOCK:
        print(json.dumps(obj, ensure_ascii=False), flush=True)


class View:
    """What one client holds, and how it applies an event."""

    def __init__(self, url):
        self.diff = "diff=1" in url
        self.state = None

    def apply(self, event, data):
        if event in ("heartbeat", "error") or not data:
            return
        if event == "patch":
            if not self.diff or not isinstance(self.state, dict):
                raise ValueError(f"a patch without a diff base: {data[:200]}")
            patch = json.loads(data)
            state = dict(self.state)
            state.update(patch.get("put", {}))
            for key in patch.get("delete", []):
                state.pop(key, None)
            self.state = state
        elif event in ("init", "update", "delete"):
            if self.diff and event != "init":
                raise ValueError(f"a diff stream sent {event}")
            self.state = json.loads(data)
        else:
            raise ValueError(f"unknown event {event!r}")


def run_sseclient(index, url):
    import requests
    import sseclient

    class Session(requests.Session):
        connects = 0

        def request(self, method, url, *args, **kwargs):
            Session.connects += 1
            emit({"watch": index, "connect": Session.connects})
            return super().request(method, url, *args, **kwargs)

    view = View(url)
    try:
        client = sseclient.SSEClient(url, retry=300, session=Session(), timeout=30)
        for ev in client:
            data = ev.data
            if (client.resp.encoding or "").lower() in ("iso-8859-1", "latin-1"):
                data = data.encode("iso-8859-1").decode("utf-8")
            view.apply(ev.event, data)
            emit({"watch": index, "conn": Session.connects, "event": ev.event, "id": ev.id,
                  "data": data, "state": view.state})
    except Exception as e:  # reported, and the test fails on it
        emit({"watch": index, "fatal": f"{type(e).__name__}: {e}"})


WATCH_JS = """
window.__seen = [];
const names = ['init', 'update', 'delete', 'patch', 'heartbeat', 'message'];
arguments[0].forEach((url, i) => {
  const es = new EventSource(url);
  let conn = 0;
  es.onopen = () => { conn += 1; window.__seen.push({watch: i, connect: conn}); };
  for (const name of names) {
    es.addEventListener(name, e => window.__seen.push(
      {watch: i, conn: conn, event: name, id: e.lastEventId, data: e.data}));
  }
  // `event: error` frames are MessageEvents; a failed or lost connection is a plain Event.
  es.addEventListener('error', e => {
    if (e instanceof MessageEvent) {
      window.__seen.push({watch: i, conn: conn, event: 'error', id: e.lastEventId, data: e.data});
    } else if (es.readyState === EventSource.CLOSED) {
      window.__seen.push({watch: i, fatal: 'EventSource closed for good'});
    }
  });
});
"""


def run_browser(stop_file, page, urls):
    from browser import headless_chromium

    views = [View(u) for u in urls]
    with headless_chromium() as driver:
        driver.get(page)
        driver.execute_script(WATCH_JS, urls)
        while not os.path.exists(stop_file):
            if time.monotonic() > DEADLINE:
                return 3
            for seen in driver.execute_script("return window.__seen.splice(0);"):
                if "event" in seen:
                    view = views[seen["watch"]]
                    try:
                        view.apply(seen["event"], seen["data"])
                    except ValueError as e:
                        emit({"watch": seen["watch"], "fatal": str(e)})
                    seen["state"] = view.state
                emit(seen)
            time.sleep(0.05)
    return 0


def main():
    mode, stop_file, *rest = sys.argv[1:]
    if mode == "browser":
        page, *urls = rest
        return run_browser(stop_file, page, urls)
    if mode != "sseclient":
        raise SystemExit(f"unknown mode {mode!r}")
    for i, url in enumerate(rest):
        threading.Thread(target=run_sseclient, args=(i, url), daemon=True).start()
    while not os.path.exists(stop_file):
        if time.monotonic() > DEADLINE:
            return 3
        time.sleep(0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
