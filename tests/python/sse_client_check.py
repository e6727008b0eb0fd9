"""Read a Server-Sent-Events stream with webrouter's client library, ``sseclient==0.0.11``.

    sse_client_check.py URL N [--last-event-id ID] [--timeout SECONDS]

Prints each event sseclient yields as one JSON line ``{"id": …, "event": …, "data": …}`` on
stdout (``id`` is a string or null, exactly as sseclient reports it) and exits 0 after N events.
Every (re)connection is logged on stderr as ``connect #k Last-Event-ID=…``. ``--timeout`` is the
socket read timeout passed to requests (default 30 s); the harness also kills the script on its
own timeout.

What sseclient 0.0.11 does (read from its sseclient.py; the harness self-test checks the points
marked *):

* Requests: ``GET url`` with ``stream=True``, ``Accept: text/event-stream`` and
  ``Cache-Control: no-cache``. ``last_id`` given to the constructor is sent as ``Last-Event-ID``
  already on the FIRST request (*). A non-2xx answer raises ``requests.HTTPError`` (no retry).
* Reading: one byte at a time (``iter_content`` with chunk size 1) decoded with requests'
  ``resp.encoding``. For ``Content-Type: text/event-stream`` without ``charset`` requests picks
  **ISO-8859-1**, so UTF-8 data arrives mis-decoded (``é`` becomes ``Ã©``) (*); lainlet's head
  has no charset, exactly like the original's. An event ends at ``\\n\\n``, ``\\r\\r`` or
  ``\\r\\n\\r\\n`` (one style per stream assumed); lines are split on ``\\n`` only.
* Events: every block is yielded, including ones without ``data:`` (heartbeats, ``retry:``-only
  blocks, even comment-only blocks, as ``event: message`` with empty data) - unlike a browser
  EventSource, which drops events with empty data. ``event`` defaults to ``message``, ``data`` to
  ``""``; several ``data:`` lines are joined with ``\\n``; one space after the colon is stripped.
* ``id:``: ``last_id`` is replaced by any non-empty ``id:`` value (a string) and kept when an
  event has none; an empty ``id:`` does NOT reset it (the SSE spec says it should). So lainlet's
  heartbeats (``id: 0``) set ``last_id`` to ``"0"``: after a heartbeat, a reconnect sends
  ``Last-Event-ID: 0`` (*).
* ``retry:``: sets the reconnect delay in ms (``int()``; a non-integer raises ValueError and ends
  the iteration; ``retry: 0`` is ignored). Default 3000 ms.
* Reconnect: when the stream ends (server closed it) or a ``requests.RequestException`` occurs
  while reading (e.g. a read timeout), it sleeps the retry delay, then reconnects with
  ``Last-Event-ID: <last_id>`` (if it has one) (*). If that reconnect itself fails (connection
  refused, non-2xx) the exception propagates: there is no second retry.
* A partial event at the cut is not fully dropped: the buffer is cut back to its last ``\\n``,
  so the complete lines of a half-received event (e.g. its ``id:`` line) are glued onto the first
  event of the new connection; an event there without ``id:`` then reports the old id (*).
"""

import argparse
import json
import sys

import requests
import sseclient


class LoggingSession(requests.Session):
    """A requests session that logs every connection attempt (and its Last-Event-ID)."""

    connects = 0

    def request(self, method, url, *args, **kwargs):
        LoggingSession.connects += 1
        headers = kwargs.get("headers") or {}
        print(
            f"connect #{LoggingSession.connects} Last-Event-ID={headers.get('Last-Event-ID')}",
            file=sys.stderr,
            flush=True,
        )
        return super().request(method, url, *args, **kwargs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("n", type=int, help="exit 0 after this many events")
    ap.add_argument("--last-event-id", default=None, help="sent on the first request already")
    ap.add_argument("--timeout", type=float, default=30.0, help="socket read timeout (s)")
    args = ap.parse_args()
    client = sseclient.SSEClient(
        args.url,
        last_id=args.last_event_id,
        session=LoggingSession(),
        timeout=args.timeout,
    )
    seen = 0
    while seen < args.n:
        event = next(client)
        print(json.dumps({"id": event.id, "event": event.event, "data": event.data}), flush=True)
        seen += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
