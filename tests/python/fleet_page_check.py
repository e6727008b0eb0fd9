"""Check lainlet's status page shows the fleet, in headless Chromium.

    fleet_page_check.py LAINLET_URL ALIVE GONE [--timeout SECONDS]

ALIVE and GONE are comma-separated host names (GONE may be empty). The caller
(tests/tests/e2e_fleet.rs) runs lainlets that announce themselves on one etcd. This script
opens the status page of one and waits until its fleet table lists exactly the ALIVE nodes as
alive (each row with a version, a store and a revision) and the GONE nodes greyed as gone.
Prints one JSON line of what it saw; exits 0 when the table showed that, 1 otherwise.
"""

import argparse
import json
import sys

from browser import headless_chromium, wait_until


def fleet_rows(driver):
    """The fleet table's rows: [node, alive, class, cells]."""
    return driver.execute_script("""
        return Array.from(document.querySelectorAll('#fleet tr'), tr =>
          [tr.dataset.node || null, tr.dataset.alive === 'true', tr.className,
           Array.from(tr.cells, td => td.textContent)]);""")


def names(rows, alive):
    return sorted(r[0] for r in rows if r[0] is not None and r[1] == alive)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("alive")
    ap.add_argument("gone")
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()
    alive = sorted(n for n in args.alive.split(",") if n)
    gone = sorted(n for n in args.gone.split(",") if n)
    seen = {}
    ok = False
    with headless_chromium(window_size=(1280, 1400)) as driver:
        try:
            driver.get(args.url)
            wait_until(lambda: names(fleet_rows(driver), True) == alive
                       and names(fleet_rows(driver), False) == gone,
                       args.timeout, f"alive {alive} and gone {gone} in the fleet table")
            rows = fleet_rows(driver)
            seen["alive"] = names(rows, True)
            seen["gone"] = names(rows, False)
            seen["rows"] = [r[3] for r in rows]
            for node, is_alive, cls, cells in rows:
                # node, ip, version, shell, store, revision, lag, watchers, up since
                assert len(cells) == 9, cells
                assert cells[4] in ("v2", "v3"), cells
                assert cells[5].isdigit() and int(cells[5]) > 0, cells
                assert (cls == "gone") == (not is_alive), (node, cls)
            ok = True
        except (AssertionError, TimeoutError) as e:
            seen["error"] = f"{type(e).__name__}: {e}"
            seen["rows"] = fleet_rows(driver)
    print(json.dumps(seen))
    if not ok:
        print(f"fleet_page_check: {seen['error']}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
