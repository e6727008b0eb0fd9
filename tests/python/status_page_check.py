"""Drive lainlet's live status page in headless Chromium against a real etcd.

    status_page_check.py LAINLET_URL ETCD_URL SCREENSHOT.png [--timeout SECONDS]

The caller (tests/tests/e2e_status.rs) has started lainlet on ETCD_URL and holds open two
watches of ``/v2/procwatcher?appname=hello`` and one of ``/v2/nodes``. This script opens the
page and checks, each within the timeout, that it

1. is live (its own stream connected) and shows etcd as watched, with those watchers;
2. opens a view with its "watch a view" box and shows the view's ``init`` frame, and counts the
   browser's own watch;
3. follows a change made in etcd here (through etcd's v3 JSON gateway): the applied revision
   reaches the put's, and the watched view's ``update`` frame shows the new value;
4. lists an undecodable pod group value written here, with its error;
5. draws the delivery charts (a few more changes give them something to show);

then saves a screenshot (also on failure, for diagnosis). Prints one JSON line of what it saw;
exits 0 when every check passed, 1 otherwise.
"""

import argparse
import base64
import json
import sys
import time
import urllib.request

from selenium.webdriver.common.by import By

from browser import headless_chromium, wait_until

BROKEN_KEY = "/lain/deployd/pod_groups/broken/broken.web.web"
CONFIG_KEY = "/lain/config/status_demo"
VALUE = "hello from etcd"


def etcd_put(etcd_url, key, value):
    """Put through etcd's v3 JSON gateway; returns the revision of the write."""
    body = json.dumps({
        "key": base64.b64encode(key.encode()).decode(),
        "value": base64.b64encode(value.encode()).decode(),
    }).encode()
    req = urllib.request.Request(f"{etcd_url}/v3/kv/put", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return int(json.load(resp)["header"]["revision"])


def text(driver, element_id):
    return driver.execute_script(
        "const e = document.getElementById(arguments[0]); return e ? e.textContent.trim() : null;",
        element_id)


# The page rebuilds its tables every second, so they are read in one script each (an element
# found in one call may be gone in the next).
def watcher_count(driver, endpoint, selection):
    """The watcher count of one (endpoint, selection) row, or None without such a row."""
    return driver.execute_script("""
        for (const tr of document.querySelectorAll('#watchers tr'))
          if (tr.dataset.endpoint === arguments[0] && tr.dataset.selection === arguments[1])
            return parseInt(tr.cells[2].textContent, 10);
        return null;""", endpoint, selection)


def log_entries(driver):
    """The watch box's frames, newest first: [event, text]."""
    return driver.execute_script("""
        return Array.from(document.querySelectorAll('#watch-log li'), li =>
          [li.querySelector('.ev').textContent.split(' ')[0], li.textContent]);""")


def failure_row(driver, key):
    """The cells of the decode-failure row of ``key``, or None."""
    return driver.execute_script("""
        for (const tr of document.querySelectorAll('#failures tr'))
          if (tr.dataset.key === arguments[0])
            return Array.from(tr.cells, td => td.textContent);
        return null;""", key)


def check(driver, args, seen):
    t = args.timeout
    driver.get(args.url)
    wait_until(lambda: text(driver, "conn") == "live", t, "the page's stream to be live")
    wait_until(lambda: text(driver, "etcd-state") == "watching", t, "etcd state 'watching'")
    seen["mode"] = text(driver, "mode")
    assert seen["mode"] == "etcd", seen
    seen["title"] = driver.title
    assert driver.title.startswith("lainlet "), driver.title

    # 1. The watchers the caller holds.
    wait_until(lambda: watcher_count(driver, "/v2/procwatcher", "hello/") == 2, t,
               "2 watchers of /v2/procwatcher hello/")
    wait_until(lambda: watcher_count(driver, "/v2/nodes", "*") == 1, t,
               "1 watcher of /v2/nodes")
    seen["watchers_before"] = text(driver, "watchers-total")

    # 2. Watch a view from the page.
    box = driver.find_element(By.ID, "watch-path")
    box.clear()
    box.send_keys("/v2/configwatcher?target=status_demo")
    driver.find_element(By.ID, "watch-start").click()
    wait_until(lambda: any(e == "init" for e, _ in log_entries(driver)), t,
               "an init frame in the watch box")
    wait_until(lambda: watcher_count(driver, "/v2/configwatcher", "status_demo") == 1, t,
               "the browser's own watch to be counted")
    wait_until(lambda: text(driver, "watchers-total") == "4", t, "4 watchers in all")

    # 3. A change in etcd.
    revision = etcd_put(args.etcd, CONFIG_KEY, VALUE)
    seen["put_revision"] = revision
    wait_until(lambda: text(driver, "applied-revision").isdigit()
               and int(text(driver, "applied-revision")) >= revision, t,
               f"applied revision {revision}")
    wait_until(lambda: any(e == "update" and VALUE in s for e, s in log_entries(driver)), t,
               "the update frame with the new value")
    seen["frames_in_box"] = len(log_entries(driver))

    # 4. An undecodable pod group value.
    bad_revision = etcd_put(args.etcd, BROKEN_KEY, "{not json")
    cells = wait_until(lambda: failure_row(driver, BROKEN_KEY), t, "the decode failure row")
    seen["failure"] = cells
    assert cells[0] == BROKEN_KEY and cells[1] and cells[2] == str(bad_revision), cells
    assert "ago" in cells[3], cells
    assert text(driver, "failures-count") == "1", text(driver, "failures-count")

    # 5. The charts have points (one per status frame after the first).
    wait_until(lambda: int(driver.execute_script(
        "return document.getElementById('chart-frames').dataset.points || 0")) >= 3,
        t, "chart points")
    # Some traffic for the charts in the screenshot: a change every 0.3 s for 3 s.
    for i in range(10):
        etcd_put(args.etcd, CONFIG_KEY, f"{VALUE} #{i}")
        time.sleep(0.3)
    wait_until(lambda: f"{VALUE} #9" in (log_entries(driver) or [["", ""]])[0][1], t,
               "the last change in the watch box")
    seen["frames_per_s"] = text(driver, "rate-frames")
    seen["uptime"] = text(driver, "uptime")
    driver.execute_script("window.scrollTo(0, 0)")


def console_errors(driver):
    """The browser console's errors, where the driver can tell them (else none)."""
    try:
        entries = driver.get_log("browser")
    except Exception:  # not every driver mode has the log
        return []
    return [e.get("message", "") for e in entries
            if e.get("level") == "SEVERE" and "favicon.ico" not in e.get("message", "")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("etcd")
    ap.add_argument("screenshot")
    ap.add_argument("--timeout", type=float, default=20.0)
    args = ap.parse_args()
    seen = {}
    ok = False
    with headless_chromium(window_size=(1280, 1180)) as driver:
        try:
            check(driver, args, seen)
            ok = True
        except (AssertionError, TimeoutError) as e:
            seen["error"] = f"{type(e).__name__}: {e}"
        finally:
            seen["screenshot"] = bool(driver.save_screenshot(args.screenshot))
        seen["console_errors"] = console_errors(driver)
        blocked = [m for m in seen["console_errors"] if "Content Security Policy" in m]
        if ok and blocked:
            ok = False
            seen["error"] = f"the page tried to load something from elsewhere: {blocked}"
    print(json.dumps(seen))
    if not ok:
        print(f"status_page_check: {seen['error']}", file=sys.stderr)
    return 0 if ok and seen["screenshot"] else 1


if __name__ == "__main__":
    sys.exit(main())
