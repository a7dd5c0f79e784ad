"""Headless Chromium driven through its DevTools protocol over a pipe (no extra packages).

Chromium started with ``--remote-debugging-pipe`` reads protocol messages (JSON, each
ended by a NUL byte) on file descriptor 3 and writes its answers and events on 4, so the
standard library is all a test needs: no WebDriver, no websocket client, no browser
download. The browser is Debian's ``chromium`` package (``make browser`` installs it).

Used by ``tests/test_listen_browser.py`` and, from the command line, to take the README's
screenshot of a listening page::

    python tests/chromium.py listen/synthetic/index.html docs/img/listen.png --colors 128
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")


class BrowserError(RuntimeError):
    """The browser could not be started, did not answer in time, or reported an error."""


def find_chromium() -> str | None:
    """Path of a Chromium executable: ``$CHROMIUM`` if set, else the first on ``PATH``."""
    configured = os.environ.get("CHROMIUM")
    if configured:
        return configured if shutil.which(configured) else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class Chromium:
    """One headless browser with one page; use as a context manager.

    ``call(method, **params)`` sends a DevTools command to the page and returns its result;
    ``evaluate(expression)`` runs JavaScript in the page (awaiting a returned promise) and
    returns its value as JSON.
    """

    def __init__(
        self, executable: str, width: int = 1280, height: int = 900, timeout_s: float = 60.0
    ) -> None:
        self.timeout_s = timeout_s
        self._profile = tempfile.mkdtemp(prefix="ncore-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # Chromium expects the pipe on descriptors 3 (its input) and 4 (its output). Copies
        # numbered 10 and up cannot collide with 3 and 4 while being moved there.
        high_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD_CLOEXEC, 10)
        high_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_browser_r)
        os.close(from_browser_w)

        def move_pipe() -> None:  # in the child, before exec: dup2 makes them inheritable
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        args = [
            executable,
            "--headless",
            "--remote-debugging-pipe",
            "--no-sandbox",  # the sandbox refuses to run as root, as CI does
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--mute-audio",
            "--hide-scrollbars",
            f"--user-data-dir={self._profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        # Chromium's own log goes to a file: a pipe nobody reads would fill and block it.
        self._log = open(Path(self._profile) / "chromium.log", "wb")
        try:
            # close_fds=False keeps 3 and 4 open; every other descriptor Python opened is
            # close-on-exec already.
            self._proc = subprocess.Popen(
                args,
                preexec_fn=move_pipe,
                close_fds=False,
                stdout=subprocess.DEVNULL,
                stderr=self._log,
            )
        finally:
            os.close(high_r)
            os.close(high_w)
        self._buffer = b""
        self._next_id = 0
        try:
            targets = self._send("Target.getTargets")["targetInfos"]
            page = next(t for t in targets if t["type"] == "page")
            attached = self._send("Target.attachToTarget", targetId=page["targetId"], flatten=True)
            self._session = attached["sessionId"]
            self.call(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ protocol plumbing

    def _send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode("utf-8") + b"\0")
        deadline = time.monotonic() + self.timeout_s
        while True:
            reply = self._read(deadline, method)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            # Anything else is an event (page load, console): not needed here.

    def _read(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"no answer to {waiting_for} within {self.timeout_s:.0f} s")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                err = (Path(self._profile) / "chromium.log").read_text(errors="replace")
                raise BrowserError(f"chromium exited while waiting for {waiting_for}: {err[-500:]}")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """A DevTools command sent to the page's session; its result."""
        return self._send(method, self._session, **params)

    # ------------------------------------------------------------------ page helpers

    def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` in the page (a promise is awaited)."""
        result = self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"JavaScript error: {text}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        """Navigate to ``url`` and wait until the document and its subresources have loaded."""
        result = self.call("Page.navigate", url=url)
        if result.get("errorText"):
            raise BrowserError(f"cannot open {url}: {result['errorText']}")
        deadline = time.monotonic() + self.timeout_s
        while self.evaluate("document.readyState") != "complete":
            if time.monotonic() > deadline:
                raise BrowserError(f"{url} did not finish loading within {self.timeout_s:.0f} s")
            time.sleep(0.05)

    def wait_for_media(self, timeout_ms: int = 30000) -> None:
        """Wait until every image and the metadata of every audio/video element have loaded
        (or failed), at most ``timeout_ms``."""
        self.evaluate(
            """new Promise(resolve => {
              const pending = () => [...document.querySelectorAll('audio,video')]
                .some(m => m.readyState < 1 && !m.error) ||
                [...document.images].some(i => !i.complete);
              const start = Date.now();
              (function poll() {
                if (!pending() || Date.now() - start > TIMEOUT_MS) resolve(true);
                else setTimeout(poll, 50);
              })();
            })""".replace("TIMEOUT_MS", str(int(timeout_ms)))
        )

    def screenshot(self, full_page: bool = False) -> bytes:
        """PNG bytes of the viewport (or of the whole page)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
            )
            params["captureBeyondViewport"] = True
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}
        return base64.b64decode(self.call("Page.captureScreenshot", **params)["data"])

    def close(self) -> None:
        proc, self._proc = getattr(self, "_proc", None), None
        if proc is not None:
            try:
                os.write(
                    self._to_browser,
                    json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0",
                )
            except OSError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for fd in ("_to_browser", "_from_browser"):
            if getattr(self, fd, None) is not None:
                try:
                    os.close(getattr(self, fd))
                except OSError:
                    pass
                setattr(self, fd, None)
        if getattr(self, "_log", None) is not None:
            self._log.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    """``python tests/chromium.py PAGE.html OUT.png [--width W] [--height H] [--full]
    [--colors K]``: the page once its media have loaded; ``--colors`` makes a palette PNG
    of K colours (much smaller, for a README)."""
    import argparse

    parser = argparse.ArgumentParser(
        description="Screenshot a local HTML page in headless Chromium."
    )
    parser.add_argument("page", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--full", action="store_true", help="the whole page, not the viewport")
    parser.add_argument("--colors", type=int, default=0, help="palette PNG of this many colours")
    args = parser.parse_args(argv)
    executable = find_chromium()
    if executable is None:
        print("error: no chromium on PATH (apt-get install chromium)", file=sys.stderr)
        return 1
    with Chromium(executable, args.width, args.height) as browser:
        browser.open(args.page.resolve().as_uri())
        browser.wait_for_media()
        png = browser.screenshot(full_page=args.full)
    if args.colors:
        import io

        from PIL import Image

        image = Image.open(io.BytesIO(png)).convert("RGB").quantize(args.colors)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        png = buffer.getvalue()
    args.png.parent.mkdir(parents=True, exist_ok=True)
    args.png.write_bytes(png)
    print(f"{args.png}: {len(png)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
