"""Drives the web page of a running `diffuse8 serve` in headless Chromium (Chrome DevTools Protocol): the page
loads, a generation runs to the end while the progress bar moves, the image and its parameters appear in the
result and the gallery. Writes a screenshot of the finished page.

Usage: web_ui_check.py BASE_URL SCREENSHOT.png [--steps N] [--user USER --password PASSWORD]
Needs `chromium` (Debian's package) and `websocket-client` (PyPI). Exits non-zero when a check fails.
"""

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket


class Page:
    """One Chromium tab, driven over the DevTools websocket."""

    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, timeout=120)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression, what, tries=1200, interval=0.05):
        """Polls `expression` until it is truthy: a bounded number of tries, each a page round trip."""
        for _ in range(tries):
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(f"timed out waiting for {what}")


def start_chromium(profile):
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if not binary:
        sys.exit("chromium not found (Debian: apt-get install chromium)")
    process = subprocess.Popen(
        [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,820",
         "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port_file = os.path.join(profile, "DevToolsActivePort")
    for _ in range(600):  # Chromium writes the port once it listens
        if os.path.exists(port_file) and open(port_file).read().strip():
            return process, int(open(port_file).read().split()[0])
        if process.poll() is not None:
            sys.exit("chromium exited at start")
        time.sleep(0.05)
    process.kill()
    sys.exit("chromium did not open its debugging port")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("base_url")
    parser.add_argument("screenshot")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args()

    profile = tempfile.mkdtemp()
    chromium, port = start_chromium(profile)
    try:
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        page = Page(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])
        page.call("Page.enable")
        page.call("Runtime.enable")
        if args.user:
            token = base64.b64encode(f"{args.user}:{args.password}".encode()).decode()
            page.call("Network.enable")
            page.call("Network.setExtraHTTPHeaders", headers={"Authorization": f"Basic {token}"})
        page.call("Page.navigate", url=args.base_url + "/")
        page.wait_for("document.getElementById('sampler') && document.getElementById('sampler').options.length > 0",
                      "the sampler list to load")
        page.evaluate(f"""document.getElementById('steps').value = {args.steps};
                          document.getElementById('seed').value = 3;
                          document.getElementById('generate').click(); true""")
        # Record the progress bar's width until the generation ends: it must take values strictly between 0 and 100%.
        widths = set()
        for _ in range(6000):
            state = page.evaluate("""({width: document.getElementById('bar').style.width,
                                      status: document.getElementById('status').textContent,
                                      error: document.getElementById('error').textContent})""")
            if state["error"]:
                raise AssertionError(f"the page shows an error: {state['error']}")
            widths.add(state["width"])
            if state["status"].startswith("Done"):
                break
            time.sleep(0.02)
        else:
            raise AssertionError("the generation did not finish")
        partial = sorted(w for w in widths if w not in ("", "0", "0px", "0%", "100%"))
        assert partial, f"the progress bar never showed partial progress (widths seen: {sorted(widths)})"
        assert page.evaluate("document.getElementById('bar').style.width") == "100%"
        size = page.evaluate("[document.getElementById('image').naturalWidth, document.getElementById('image').naturalHeight]")
        assert size[0] > 0 and size[1] > 0, "no image shown"
        parameters = page.evaluate("document.getElementById('parameters').textContent")
        assert f"Steps: {args.steps}," in parameters and "Seed: 3," in parameters, parameters
        assert page.evaluate("document.querySelectorAll('#gallery img').length") == 1, "the gallery should hold one image"
        page.evaluate("document.getElementById('bar').style.transition = 'none'; true")  # no half-animated bar
        shot = page.call("Page.captureScreenshot", format="png")
        with open(args.screenshot, "wb") as out:
            out.write(base64.b64decode(shot["data"]))
        print(f"web page OK: progress bar at {', '.join(partial)} on the way, image {size[0]}x{size[1]}; "
              f"screenshot {args.screenshot}")
    finally:
        chromium.terminate()
        chromium.wait()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
