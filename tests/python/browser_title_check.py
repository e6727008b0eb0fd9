"""Open a page in headless Chromium, wait for its title, save a screenshot.

    browser_title_check.py URL TITLE SCREENSHOT.png [--timeout SECONDS]

Exits 0 once ``document.title == TITLE`` (the screenshot is taken then), 1 on a timeout
(after saving a screenshot of what the page shows, for diagnosis) or any error. The harness
self-test serves a page whose script sets the title when an EventSource receives an event, so a
0 exit proves browser-based EventSource tests work on this machine.
"""

import argparse
import sys

from browser import headless_chromium, wait_title


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("title")
    ap.add_argument("screenshot")
    ap.add_argument("--timeout", type=float, default=15.0)
    args = ap.parse_args()
    with headless_chromium() as driver:
        driver.get(args.url)
        try:
            wait_title(driver, args.title, args.timeout)
        except TimeoutError as e:
            driver.save_screenshot(args.screenshot)
            print(f"browser_title_check: {e}", file=sys.stderr)
            return 1
        if not driver.save_screenshot(args.screenshot):
            print("browser_title_check: screenshot failed", file=sys.stderr)
            return 1
        print(f"title {driver.title!r}; screenshot {args.screenshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
