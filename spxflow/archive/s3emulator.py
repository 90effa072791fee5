"""Loopback S3 emulator: the public SPHEREx bucket (spec §9.1) served from the simulated archive.

One concept, hence one module: one HTTP server (``ThreadingHTTPServer``, HTTP/1.1 keep-alive,
daemon threads), its routes, fault injection and statistics, in the style of
``spxflow.archive.emulator`` (the IRSA emulator).

Routes (bucket-in-host style: the path is the key):

- ``GET /<key>`` and ``HEAD /<key>``: the object ``SimulatedArchive.whole_file(key)`` (a Level-2
  file ``qr2|qr3/level2/<pp>/<token>/<det>/<file>.fits``, rendered lazily, or a calibration
  product ``<release>/<family>/<token>/<det>/<file>``). One ``Range: bytes=a-b`` (or ``a-``, or
  the suffix ``-n``) answers 206 with ``Content-Range: bytes a-b/total``; no Range answers 200
  with the whole object. Every answer carries ``Content-Length``, ``ETag``, ``Accept-Ranges:
  bytes``, ``Last-Modified`` and ``x-amz-request-id``. A Range that does not parse is ignored
  (200, as S3 and RFC 9110 do); a multi-range header is refused with 400 ``InvalidArgument``;
  an unsatisfiable one answers 416 ``InvalidRange``; ``If-Match`` other than the current ETag
  (or ``*``) answers 412 ``PreconditionFailed``. Unknown key: 404 ``NoSuchKey``; a key outside
  the bucket's prefixes (``qr2/``, ``qr3/``): 403 ``AccessDenied``; ``/`` (listing): 501.
  Errors are S3 XML (``<Error><Code>..</Code><Message>..</Message><Key>..</Key>
  <RequestId>..</RequestId></Error>``, ``application/xml``; no body on HEAD).
- ``GET /__stats``: JSON totals (requests, bytes sent, status counts, faults injected, in flight
  and maximum concurrent requests) and per key (requests, bytes, GET/HEAD counts).
  ``POST /__reset`` zeroes them. ``GET``/``POST /__faults``: read / replace the fault
  configuration. ``POST /__replace`` with ``{"key": ...}``: replace an object. Paths beginning
  with ``/__`` are reserved for control and never counted.

Fault configuration (JSON)::

    {"seed": 1, "latency_s": 0.02,
     "rules": [{"fault": "503", "rate": 0.2, "retry_after": 1},
               {"fault": "reset", "match": "D3_spx", "max_per_url": 1},
               {"fault": "replace", "match": "0217_2D1", "after": 2}]}

``latency_s``: added to every object request. Rule keys: ``fault`` = slow | 503 | 500 | reset |
truncate | 403 | 404 | replace; ``match`` (regex searched in the key); ``rate`` (default 1);
``permanent`` (the decision depends on the key only, so the key always fails; default true for
403/404, the permanent denial of a key, false otherwise: then the decision depends on the key,
the Range header and how often that (key, range) was requested, so retries eventually pass);
``max_per_url`` (at most that many injections per key); ``retry_after`` (s; 503 ``SlowDown``
sends ``Retry-After`` only if given); ``slow_s`` (s, default 5, for slow); ``after`` (replace:
the key's generation bumps once, at its request number ``after + 1`` counted from when the
rule was set, so the first ``after`` requests see the old ETag). Decisions are hashes of
(seed, rule, key, range, request number): reproducible whatever the thread order. The first
matching rule other than ``replace`` wins (replace rules only have their side effect).
``500`` is ``InternalError``; ``reset`` closes the connection without an answer (RST);
``truncate`` sends the headers with the full ``Content-Length``, half the body, and closes.
Setting faults restarts the ``max_per_url`` and ``after`` counts.

What differs from the real bucket:

- ETag = hash of (key, generation), not the MD5 of the content; a replaced object gets a new
  ETag and ``Last-Modified`` (+1 day per generation) but keeps its bytes.
- R7 FLAGS heaps use fixed 8229-byte slots with constant-length RICE_1 tiles
  (``spxflow.sim.wholefile``), so QR3 files are ~70.7 MB instead of ~65.5 MB; QR2 files have
  the real size.
- Multi-range GETs are refused with 400 (S3 does not support them); no listing, no
  ``If-None-Match``/``If-Modified-Since``, no checksums, no ``versionId``.

CLI: ``python -m spxflow.archive.s3emulator --port N [--config config/config.yaml] [--faults JSON]``
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import itertools
import json
import re
import socket
import sys
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from urllib.parse import unquote

from spxflow.archive.base import ArchiveError
from spxflow.archive.emulator import (
    LockedStats,
    LoopbackHandler,
    LoopbackServer,
    archive_from,
    check_faults,
    get_stats,
    post_json,
    reset_stats,
    serve_cli,
    serve_in_thread,
    set_faults,
    stop_server,
)
from spxflow.archive.simulated import SimulatedArchive
from spxflow.format import CALIBRATION_TOKENS

FAULTS = ("slow", "503", "500", "reset", "truncate", "403", "404", "replace")
PREFIXES = tuple(f"{release}/" for release in sorted(CALIBRATION_TOKENS))
_RULE_KEYS = {
    "fault",
    "match",
    "rate",
    "permanent",
    "max_per_url",
    "retry_after",
    "slow_s",
    "after",
}
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_BASE_MTIME = 1790812800.0  # 2026-10-01T00:00:00Z, Last-Modified of generation 0
_XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'


def _complete_rule(i: int, r: dict) -> None:
    r["rate"] = float(r.get("rate", 1.0))
    r["permanent"] = bool(r.get("permanent", r["fault"] in ("403", "404")))
    if r["fault"] == "replace":
        r["after"] = int(r.get("after", 0))


def _check_faults(cfg: Mapping | None) -> dict:
    cfg, rules = check_faults(
        "s3 emulator", cfg, {"seed", "latency_s", "rules"}, _RULE_KEYS, FAULTS, _complete_rule
    )
    latency = float(cfg.get("latency_s", 0.0) or 0.0)
    if latency < 0:
        raise ValueError("s3 emulator faults: latency_s must be >= 0")
    return {"seed": int(cfg.get("seed", 0)), "latency_s": latency, "rules": rules}


class _Stats(LockedStats):
    def reset(self):
        self.requests = 0
        self.bytes_sent = 0
        self.status = Counter()
        self.faults = Counter()
        self.in_flight = 0
        self.max_concurrent = 0
        self.per_key: dict[str, dict] = {}
        self.per_range = Counter()  # (key, range header) -> requests (fault decisions)
        self.fault_count = Counter()  # (rule index, key) -> injections
        self.rule_seen = Counter()  # (replace rule index, key) -> matching requests

    def as_dict(self) -> dict:
        with self.lock:
            return {
                "requests": self.requests,
                "bytes_sent": self.bytes_sent,
                "status": dict(self.status),
                "faults": dict(self.faults),
                "in_flight": self.in_flight,
                "max_concurrent": self.max_concurrent,
                "per_key": {k: dict(v) for k, v in self.per_key.items()},
            }


class S3EmulatorServer(LoopbackServer):
    """The S3 emulator's HTTP server; ``archive`` holds the objects, ``faults`` what fails."""

    request_queue_size = 256

    def __init__(
        self,
        address,
        archive: SimulatedArchive,
        faults: Mapping | None = None,
        prefixes: tuple[str, ...] = PREFIXES,
    ):
        super().__init__(address, _Handler)
        self.archive = archive
        self.prefixes = tuple(prefixes)
        self.stats = _Stats()
        self.set_faults(faults)
        self.generation: defaultdict[str, int] = defaultdict(int)
        self._gen_lock = threading.Lock()
        self._request_ids = itertools.count(1)

    def set_faults(self, faults: Mapping | None) -> dict:
        checked = _check_faults(faults)
        matchers = [re.compile(r["match"]) if r.get("match") else None for r in checked["rules"]]
        self._fault_state = (checked, matchers)  # swapped as one: requests see either whole
        with self.stats.lock:
            self.stats.fault_count.clear()
            self.stats.rule_seen.clear()
        return checked

    @property
    def faults(self) -> dict:
        return self._fault_state[0]

    def replace(self, key: str) -> int:
        """Bump the generation (hence ETag and Last-Modified) of ``key``; the new generation."""
        with self._gen_lock:
            self.generation[key] += 1
            return self.generation[key]

    def etag(self, key: str) -> tuple[str, int]:
        gen = self.generation.get(key, 0)
        return _etag(key, gen), gen

    def decide(self, key: str, rng: str, n_range: int) -> dict | None:
        """The fault rule that fires for this request (or None); applies replace rules."""
        fired = None
        faults, matchers = self._fault_state
        seed = faults["seed"]
        for i, rule in enumerate(faults["rules"]):
            rx = matchers[i]
            if rx is not None and not rx.search(key):
                continue
            fault = rule["fault"]
            if fault == "replace":
                with self.stats.lock:
                    self.stats.rule_seen[(i, key)] += 1
                    if self.stats.rule_seen[(i, key)] <= rule["after"]:
                        continue
                salt = key
            elif fired is not None:
                continue
            else:
                salt = key if rule["permanent"] else f"{key}|{rng}#{n_range}"
            if rule["rate"] < 1.0:
                h = hashlib.sha256(f"{seed}|{i}|{salt}".encode()).digest()
                if int.from_bytes(h[:8], "big") / 2.0**64 >= rule["rate"]:
                    continue
            limit = 1 if fault == "replace" else rule.get("max_per_url")
            with self.stats.lock:
                if limit is not None and self.stats.fault_count[(i, key)] >= int(limit):
                    continue
                self.stats.fault_count[(i, key)] += 1
                self.stats.faults[fault] += 1
            if fault == "replace":
                self.replace(key)
            else:
                fired = rule
        return fired


class _Handler(LoopbackHandler):
    server: S3EmulatorServer
    protocol_version = "HTTP/1.1"
    server_version = "spxflow-s3-emulator/1"
    timeout = 300  # idle keep-alive connections end after this
    wait_poll_s = 0.05

    def setup(self):
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -------------------------------------------------------------- dispatch
    def do_GET(self):
        self._dispatch(head=False)

    def do_HEAD(self):
        self._dispatch(head=True)

    def parse_request(self) -> bool:
        self._key_stats, self._left = None, True  # per request: a control request until counted
        return super().parse_request()

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        body = self._body()
        server = self.server
        try:
            obj = json.loads(body or b"{}")
            if path == "/__faults":
                return self._json(server.set_faults(obj))
            if path == "/__reset":
                server.stats.locked_reset()
                return self._json({"reset": True})
            if path == "/__replace":
                key = str(obj["key"])
                return self._json({"key": key, "generation": server.replace(key)})
        except (ValueError, TypeError, KeyError) as exc:
            return self._raw(400, "text/plain", f"{exc!r}\n".encode())
        return self._error(405, "MethodNotAllowed", "POST is only for /__ control paths", path)

    def _dispatch(self, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path.startswith("/__"):
            if head:
                return self._raw(405, "text/plain", b"")
            if path == "/__stats":
                return self._json(self.server.stats.as_dict())
            if path == "/__faults":
                return self._json(self.server.faults)
            return self._raw(404, "text/plain", b"unknown control path\n")
        key = unquote(path[1:])
        if not key:
            return self._error(501, "NotImplemented", "Bucket listing is not emulated", key)
        server = self.server
        if not key.startswith(server.prefixes):
            return self._error(403, "AccessDenied", "Access Denied", key)
        stats = server.stats
        rng = self.headers.get("Range") or ""
        with stats.lock:
            stats.requests += 1
            per = stats.per_key.get(key)
            if per is None:
                per = stats.per_key[key] = {"requests": 0, "bytes": 0, "GET": 0, "HEAD": 0}
            per["requests"] += 1
            per["HEAD" if head else "GET"] += 1
            stats.per_range[(key, rng)] += 1
            n_range = stats.per_range[(key, rng)]
            stats.in_flight += 1
            stats.max_concurrent = max(stats.max_concurrent, stats.in_flight)
        self._left = False
        self._key_stats = per
        status = "error"
        try:
            status = self._serve(key, rng, head, n_range)
        except (BrokenPipeError, ConnectionResetError):
            status, self.close_connection = "aborted", True
        finally:
            self._leave(status)

    def _leave(self, status, nbytes: int = 0) -> None:
        """End this request in the statistics, once: its in-flight count, body bytes and
        status. A full answer calls it before its last body byte, so a client holding the
        answer always sees it counted."""
        if not self._left:
            self._left = True
            stats = self.server.stats
            with stats.lock:
                stats.in_flight -= 1
                stats.bytes_sent += nbytes
                self._key_stats["bytes"] += nbytes
                stats.status[str(status)] += 1

    # -------------------------------------------------------------- serving
    def _serve(self, key: str, rng: str, head: bool, n_range: int):
        server = self.server
        faults = server.faults
        if faults["latency_s"] > 0:
            if not self._wait(faults["latency_s"]):
                return "aborted"
        rule = server.decide(key, rng, n_range) if faults["rules"] else None
        fault = rule["fault"] if rule else None
        if fault == "403":
            return self._error(403, "AccessDenied", "Access Denied", key)
        if fault == "404":
            return self._error(404, "NoSuchKey", "The specified key does not exist.", key)
        if fault == "503":
            extra = {"Retry-After": str(rule["retry_after"])} if "retry_after" in rule else {}
            return self._error(503, "SlowDown", "Please reduce your request rate.", key, extra)
        if fault == "500":
            msg = "We encountered an internal error. Please try again."
            return self._error(500, "InternalError", msg, key)
        if fault == "reset":
            self._reset()
            return "reset"
        if fault == "slow" and not self._wait(float(rule.get("slow_s", 5.0))):
            return "aborted"
        try:
            obj = server.archive.whole_file(key)
        except ArchiveError:
            return self._error(404, "NoSuchKey", "The specified key does not exist.", key)
        etag, gen = server.etag(key)
        match = self.headers.get("If-Match")
        if match is not None and match.strip() != "*" and etag not in _etags(match):
            msg = "At least one of the pre-conditions you specified did not hold"
            return self._error(412, "PreconditionFailed", msg, key)
        size = obj.size
        headers = {
            "ETag": etag,
            "Last-Modified": _http_date(_BASE_MTIME + 86400.0 * gen),
            "Accept-Ranges": "bytes",
            "Content-Type": "binary/octet-stream",
        }
        code, start, end = 200, 0, size
        if rng:
            parsed = _parse_range(rng, size)
            if parsed == "multi":
                return self._error(
                    400, "InvalidArgument", "Multiple byte ranges are not supported", key
                )
            if parsed == "unsatisfiable":
                return self._error(
                    416,
                    "InvalidRange",
                    "The requested range is not satisfiable",
                    key,
                    {"Content-Range": f"bytes */{size}"},
                )
            if parsed is not None:
                code, (start, end) = 206, parsed
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        if head:
            return self._raw(code, None, b"", headers, length=end - start)
        try:
            body = obj.read(start, end) if end > start else b""
        except Exception as exc:  # noqa: BLE001 - a rendering bug must not kill the thread
            return self._error(500, "InternalError", f"{type(exc).__name__}: {exc}", key)
        if fault == "truncate":
            return self._raw(code, None, body, headers, truncate=True)
        return self._raw(code, None, body, headers)

    # -------------------------------------------------------------- low level
    def _request_id(self) -> str:
        return f"{next(self.server._request_ids):016X}"

    def _error(self, code: int, s3_code: str, message: str, key: str, extra=None):
        rid = self._request_id()
        body = (
            f"{_XML_HEAD}<Error><Code>{s3_code}</Code><Message>{_xml(message)}</Message>"
            f"<Key>{_xml(key)}</Key><RequestId>{rid}</RequestId></Error>"
        ).encode()
        if self.command == "HEAD":
            return self._raw(code, "application/xml", b"", extra, length=len(body), rid=rid)
        return self._raw(code, "application/xml", body, extra, rid=rid)

    def _raw(
        self,
        code: int,
        ctype: str | None,
        body: bytes,
        headers: Mapping | None = None,
        length: int | None = None,
        truncate: bool = False,
        rid: str | None = None,
    ):
        """Send status line, headers and body in as few writes as possible (keep-alive)."""
        lines = [
            f"HTTP/1.1 {code} {self.responses.get(code, ('',))[0]}",
            f"Date: {self.date_time_string()}",
            f"Server: {self.server_version}",
            f"x-amz-request-id: {rid or self._request_id()}",
            f"Content-Length: {len(body) if length is None else length}",
        ]
        if ctype:
            lines.append(f"Content-Type: {ctype}")
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        if self.close_connection or truncate:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        wfile = self.wfile
        if truncate:
            part = body[: max(1, len(body) // 2)]
            wfile.write(head + part)
            self.close_connection = True
            self._count_bytes(len(part))
            return "truncate"
        if self._left:  # a control request: not counted
            wfile.write(head + body)
        elif len(body) > 1:  # counted before the last byte (emulator.py does the same)
            if len(body) < 65536:
                wfile.write(head + body[:-1])
            else:
                wfile.write(head)
                wfile.write(memoryview(body)[:-1])
            self._leave(code, len(body))
            wfile.write(body[-1:])
        else:
            self._leave(code, len(body))
            wfile.write(head + body)
        return code

    def _count_bytes(self, n: int) -> None:
        per = self._key_stats
        if per is None:  # a control request
            return
        stats = self.server.stats
        with stats.lock:
            stats.bytes_sent += n
            per["bytes"] += n

    def _json(self, obj) -> None:
        self._raw(200, "application/json", json.dumps(obj, sort_keys=True).encode())


def _etag(key: str, generation: int) -> str:
    return '"' + hashlib.md5(f"{key}\0{generation}".encode()).hexdigest() + '"'


def _etags(header: str) -> list[str]:
    return [t.strip().removeprefix("W/") for t in header.split(",")]


def _http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _parse_range(header: str, size: int):
    """(start, end) half-open, "multi", "unsatisfiable", or None (ignored: not a byte range)."""
    text = header.strip().replace(" ", "")
    if "," in text:
        return "multi" if text.lower().startswith("bytes=") else None
    m = _RANGE_RE.match(text.lower())
    if not m or (not m[1] and not m[2]):
        return None
    if not m[1]:  # suffix: the last n bytes
        n = int(m[2])
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size
    a = int(m[1])
    b = int(m[2]) if m[2] else size - 1
    if a >= size:
        return "unsatisfiable"
    if b < a:
        return None  # invalid: ignored
    return a, min(b, size - 1) + 1


def start_s3_emulator(
    archive_or_cfg=None, faults: Mapping | None = None, host: str = "127.0.0.1", port: int = 0
) -> S3EmulatorServer:
    """Start the S3 emulator in a daemon thread (``port=0`` picks a free port); stop it with
    ``server.shutdown(); server.server_close()``. ``server.base_url`` is its endpoint."""
    server = S3EmulatorServer((host, port), archive_from(archive_or_cfg), faults)
    server.thread = serve_in_thread(server)
    return server


@contextlib.contextmanager
def running_s3_emulator(
    archive_or_cfg=None, faults: Mapping | None = None, port: int = 0
) -> Iterator[S3EmulatorServer]:
    """Run the S3 emulator for the ``with`` block; yields the server (``.base_url``).

    ``archive_or_cfg``: a ``SimulatedArchive``, the workflow's ``archive`` mapping (its
    ``simulated`` part is served) or a whole workflow config.
    """
    server = start_s3_emulator(archive_or_cfg, faults, port=port)
    try:
        yield server
    finally:
        stop_server(server, server.thread)


# -------------------------------------------------------------------- client helpers
def get_s3_stats(base_url: str) -> dict:
    return get_stats(base_url)


def set_s3_faults(base_url: str, faults: Mapping | None) -> dict:
    return set_faults(base_url, faults)


def reset_s3_stats(base_url: str) -> dict:
    return reset_stats(base_url)


def replace_object(base_url: str, key: str) -> dict:
    """Replace the object at ``key`` (new ETag); returns ``{"key", "generation"}``."""
    return post_json(base_url, "/__replace", {"key": key})


# -------------------------------------------------------------------- CLI
def _start_cli(cfg, faults, host: str, port: int):
    server = start_s3_emulator(cfg, faults, host=host, port=port)
    return server, server.thread


def main(argv: list[str] | None = None) -> int:
    banner = "S3 emulator on {url}"
    return serve_cli(argv, "spxflow.archive.s3emulator", __doc__, 8766, _start_cli, banner)


if __name__ == "__main__":
    sys.exit(main())
