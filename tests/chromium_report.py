"""Open an HTML file (e.g. a Snakemake report.html) in headless Chromium and collect what a
person would notice: console errors, uncaught exceptions, failed resource loads, the rendered
DOM and a screenshot.

Chromium's ``--enable-logging=stderr`` prints console messages without their level, so errors
are taken from the DevTools protocol instead (Runtime.consoleAPICalled, Runtime.exceptionThrown,
Log.entryAdded), spoken over a minimal stdlib websocket client. Standard library only.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--window-size=1400,1000",
    "--remote-debugging-port=0",
)


class _WebSocket:
    """Just enough RFC 6455 for the DevTools protocol: masked text frames out, frames in."""

    def __init__(self, url: str, timeout: float):
        assert url.startswith("ws://"), url
        hostport, _, path = url[5:].partition("/")
        host, _, port = hostport.partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.buf = bytearray()
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket handshake failed: {head[:200]!r}")
        self.buf = bytearray(rest)

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("DevTools websocket closed")
        self.buf += chunk

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def send(self, text: str) -> None:
        payload = text.encode()
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        mask = os.urandom(4)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + body)

    def recv(self, timeout: float) -> str | None:
        """One text message, or None if nothing arrived within ``timeout`` seconds."""
        self.sock.settimeout(max(timeout, 0.01))
        parts: list[bytes] = []
        try:
            while True:
                b0, b1 = self._take(2)
                n = b1 & 0x7F
                if n == 126:
                    n = struct.unpack("!H", self._take(2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", self._take(8))[0]
                mask = self._take(4) if b1 & 0x80 else None
                data = self._take(n)
                if mask:
                    data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
                opcode = b0 & 0x0F
                if opcode == 0x8:
                    raise ConnectionError("DevTools websocket closed by the browser")
                if opcode == 0x9:  # ping
                    continue
                if opcode in (0x1, 0x2, 0x0):
                    parts.append(data)
                    if b0 & 0x80:
                        return b"".join(parts).decode("utf-8", "replace")
        except TimeoutError:
            if parts:
                raise
            return None

    def close(self) -> None:
        self.sock.close()


class _DevTools:
    def __init__(self, ws: _WebSocket):
        self.ws = ws
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, timeout: float = 30.0, **params) -> dict:
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.ws.recv(deadline - time.monotonic())
            if msg is None:
                continue
            obj = json.loads(msg)
            if obj.get("id") == my_id:
                if "error" in obj:
                    raise RuntimeError(f"DevTools {method}: {obj['error']}")
                return obj.get("result", {})
            if "method" in obj:
                self.events.append(obj)
        raise TimeoutError(f"DevTools {method} did not answer within {timeout} s")

    def pump(self, seconds: float, until: str | None = None) -> bool:
        """Collect events for ``seconds`` (or until event ``until`` arrives: returns True)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            msg = self.ws.recv(left)
            if msg is None:
                break
            obj = json.loads(msg)
            if "method" in obj:
                self.events.append(obj)
                if until and obj["method"] == until:
                    return True
        return False


def _console_errors(events: list[dict]) -> list[str]:
    errors = []
    for ev in events:
        method, p = ev["method"], ev.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            texts = [
                str(a.get("value", a.get("description", a.get("type", "")))) for a in p["args"]
            ]
            errors.append(f"console.{p['type']}: {' '.join(texts)}")
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            text = d.get("exception", {}).get("description") or d.get("text", "")
            errors.append(f"uncaught exception: {text}")
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            errors.append(
                f"{e.get('source', 'log')}: {e.get('text', '')} {e.get('url', '')}".strip()
            )
    return errors


def check_report_in_chromium(
    report_html: Path,
    *,
    screenshot: Path | None = None,
    settle_s: float = 3.0,
    timeout_s: float = 60.0,
    chromium: str = CHROMIUM,
) -> dict:
    """Load ``report_html`` in headless Chromium; return
    ``{"console_errors": [...], "dom": str, "screenshot": Path, "stderr": str}``.

    ``console_errors`` holds console.error/assert calls, uncaught exceptions and failed resource
    loads seen while the page loads and for ``settle_s`` seconds after (the Snakemake report
    renders with JavaScript after the load event). The screenshot defaults to a PNG beside a
    temporary profile directory that is not deleted.
    """
    report_html = Path(report_html).resolve()
    if not report_html.is_file():
        raise FileNotFoundError(report_html)
    work = Path(tempfile.mkdtemp(prefix="spxflow-chromium-"))
    profile = work / "profile"
    screenshot = Path(screenshot) if screenshot else work / "screenshot.png"
    err_path = work / "chromium.stderr"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    ws = None
    try:
        port = _devtools_port(profile, proc, timeout_s)
        ws_url = _page_websocket(port, timeout_s)
        ws = _WebSocket(ws_url, timeout_s)
        dt = _DevTools(ws)
        for domain in ("Runtime", "Log", "Page"):
            dt.call(f"{domain}.enable")
        dt.call("Page.navigate", url=report_html.as_uri())
        if not dt.pump(timeout_s, until="Page.loadEventFired"):
            raise TimeoutError(f"{report_html} did not finish loading in {timeout_s} s")
        dt.pump(settle_s)
        dom = dt.call(
            "Runtime.evaluate", expression="document.documentElement.outerHTML", returnByValue=True
        )["result"].get("value", "")
        shot = dt.call("Page.captureScreenshot", format="png")
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        dt.pump(0.2)
        errors = _console_errors(dt.events)
    finally:
        if ws is not None:
            ws.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
    return {
        "console_errors": errors,
        "dom": dom,
        "screenshot": screenshot,
        "stderr": err_path.read_text(errors="replace"),
    }


def _devtools_port(profile: Path, proc: subprocess.Popen, timeout_s: float) -> int:
    """Chromium writes the port it picked (``--remote-debugging-port=0``) to this file."""
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited early with code {proc.returncode}")
        if marker.exists():
            lines = marker.read_text().split()
            if lines:
                return int(lines[0])
        time.sleep(0.05)
    raise TimeoutError("chromium did not open its DevTools port")


def _page_websocket(port: int, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                targets = json.load(r)
        except OSError:
            targets = []
        pages = [t for t in targets if t.get("type") == "page" and "webSocketDebuggerUrl" in t]
        if pages:
            return pages[0]["webSocketDebuggerUrl"]
        time.sleep(0.1)
    raise TimeoutError("no page target in chromium's DevTools list")
