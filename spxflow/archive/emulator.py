"""Loopback IRSA emulator: the simulated archive served over IRSA's protocols, with faults.

One concept, hence one module over ~400 lines: one HTTP server, its routes, fault injection
and request statistics, which share the per-request state.

Serves, from a ``SimulatedArchive``:

- ``GET /SIA?POS=CIRCLE ra dec r&COLLECTION=..&TIME=lo hi&MAXREC=n``: SIA2 VOTable with the §3.1
  columns (rows of ``SimulatedArchive.discover`` whose ``obs_collection`` is requested:
  spherex_qr2, spherex_qr2_deep, spherex_qr3, spherex_qr3_deep; ``access_url`` values are the
  real IRSA URLs, so the discovery table equals the simulated backend's). Bad requests answer
  HTTP 200 with a ``QUERY_STATUS=ERROR`` VOTable as IRSA does; more rows than ``MAXREC`` (or
  the emulator's ``sia_max_rows``) answer the first rows with ``QUERY_STATUS=OVERFLOW``.
- ``POST /TAP/sync`` (form or multipart with an upload, as pyvo sends it; GET too):
  ``REQUEST=doQuery&LANG=ADQL&QUERY=..&MAXREC=n&UPLOAD=cat,param:cat``, the ADQL shapes of
  ``spxflow.archive.tap`` answered from ``SimulatedArchive.discover_many``
  (``spxflow.archive.tapserve``); ADQL it does not understand answers HTTP 400 with a
  ``QUERY_STATUS=ERROR`` VOTable; more rows than ``MAXREC`` (or ``tap_max_rows``) end with
  ``QUERY_STATUS=OVERFLOW``.
- ``GET /ibe/data/spherex/<release>/level2/...fits?center=ra,dec&size=deg[&gzip=false]``
  (release qr2 or qr3): a cutout (``SimulatedArchive.cutout_bytes``, QR2 or R7 layout), gzip
  unless ``gzip=false``; HTTP 400 if no overlap, 404 for an image the archive does not serve.
- ``GET /ibe/data/spherex/<release>/<family>/<token>/<det>/<file>``: calibration products of
  ``format.CALIBRATION_TOKENS``; 404 unless token and file name are exactly the product's
  (e.g. the D3-only ``cal-epsf-v2`` token 404s on other detectors).
- ``GET /__stats``: JSON counters (requests, status codes, faults injected, in flight and the
  maximum concurrent requests seen per path kind, requests per URL). ``POST /__reset`` zeroes
  them. ``GET``/``POST /__faults``: read / replace the fault configuration.

Fault configuration (JSON)::

    {"seed": 1, "sia_max_rows": null, "tap_max_rows": null,
     "rules": [{"kind": "cutout", "fault": "503", "rate": 0.3},
               {"kind": "cutout", "match": "D3_spx", "fault": "reset", "permanent": true}]}

``kind``: sia | tap | cutout | calibration | * ; ``match``: regex searched in path?query; ``fault``:
429 | 503 | 504 | slow | truncate | reset | gzip | no_overlap | error_votable; ``rate`` (default 1);
``permanent`` (the decision depends on the URL only, so the URL always fails; otherwise on the
URL and how many times it was requested, so retries eventually pass); ``max_per_url`` (at most
that many injections per URL); ``retry_after`` (s, for 429/503/504); ``slow_s`` (s, for slow).
Decisions are hashes of (seed, rule, URL, request number): reproducible whatever the thread
order. The "URL" of a TAP request is ``/TAP/sync?<its parameters>&UPLOAD_SHA256=<digest of the
uploaded positions>``, so each chunk of positions is its own URL and a retry repeats it.

CLI: ``python -m spxflow.archive.emulator --port N [--config config/config.yaml] [--faults JSON]``

The generic parts (``LoopbackServer``, ``LoopbackHandler``, ``check_faults``, ``LockedStats``,
``archive_from``, ``serve_in_thread``/``stop_server``, the client helpers and ``serve_cli``) are
shared with ``spxflow.archive.s3emulator``.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import re
import select
import socket
import struct
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pandas as pd

from spxflow.archive import tapserve
from spxflow.archive.base import ArchiveError, NoOverlapError
from spxflow.archive.sia import error_votable_bytes, votable_bytes
from spxflow.archive.simulated import SimulatedArchive
from spxflow.archive.validate import maybe_gunzip
from spxflow.format import CALIBRATION_TOKENS, calibration_file_name, calibration_token

IRSA_ORIGIN = "https://irsa.ipac.caltech.edu"
FAULTS = ("429", "503", "504", "slow", "truncate", "reset", "gzip", "no_overlap", "error_votable")
KINDS = ("sia", "tap", "cutout", "calibration")
_RELEASE_PATH = "|".join(sorted(CALIBRATION_TOKENS))
_CUTOUT_RE = re.compile(rf"^/ibe/data/spherex/(?:{_RELEASE_PATH})/level2/")
_CAL_RE = re.compile(
    rf"^/ibe/data/spherex/(?P<release>{_RELEASE_PATH})/(?P<family>[a-z0-9_]+)/(?P<token>[^/]+)/"
    r"(?P<det>[1-6])/(?P<file>[^/]+)$"
)
_SIZE_UNITS = {"": 3600.0, "d": 3600.0, "deg": 3600.0, "arcmin": 60.0, "arcsec": 1.0}


_RULE_KEYS = {"kind", "match", "fault", "rate", "permanent", "max_per_url", "retry_after", "slow_s"}


def check_faults(
    what: str,
    cfg: Mapping | None,
    keys: set[str],
    rule_keys: set[str],
    faults: tuple[str, ...],
    complete,
) -> tuple[dict, list[dict]]:
    """A fault configuration checked: ``(cfg, rules)``, ``cfg`` (a dict) refused if it has a key
    outside ``keys``, each rule by ``_check_rule``. ``what`` names the emulator in the errors."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - keys)
    if unknown:
        raise ValueError(f"{what} faults: unknown key(s) {unknown}")
    rules = [
        _check_rule(what, i, r, rule_keys, faults, complete)
        for i, r in enumerate(cfg.get("rules", []) or [])
    ]
    return cfg, rules


def _check_rule(
    what: str, i: int, rule: Mapping, keys: set[str], faults: tuple[str, ...], complete
) -> dict:
    """Fault rule ``i`` checked: only ``keys``, ``fault`` one of ``faults`` (as a string), then
    ``complete(i, r)`` (the emulator's own checks and defaults, in place), then ``match``
    compiled."""
    r = dict(rule)
    bad = sorted(set(r) - keys)
    if bad:
        raise ValueError(f"{what} fault rule {i}: unknown key(s) {bad}")
    r["fault"] = str(r.get("fault"))
    if r["fault"] not in faults:
        raise ValueError(f"{what} fault rule {i}: fault must be one of {faults}")
    complete(i, r)
    if r.get("match"):
        re.compile(r["match"])
    return r


def _complete_rule(i: int, r: dict) -> None:
    kind = r.get("kind", "*")
    if kind not in (*KINDS, "*"):
        raise ValueError(f"emulator fault rule {i}: kind must be one of {KINDS} or '*'")
    r["kind"] = kind
    r["rate"] = float(r.get("rate", 1.0))


def _check_faults(cfg: Mapping | None) -> dict:
    cfg, rules = check_faults(
        "emulator",
        cfg,
        {"seed", "rules", "sia_max_rows", "tap_max_rows"},
        _RULE_KEYS,
        FAULTS,
        _complete_rule,
    )
    out = {"seed": int(cfg.get("seed", 0)), "rules": rules}
    for key in ("sia_max_rows", "tap_max_rows"):
        out[key] = None if cfg.get(key) is None else int(cfg[key])
    return out


class LockedStats:
    """Request statistics behind one lock; ``reset`` (called unlocked) sets the counters."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        raise NotImplementedError

    def locked_reset(self) -> None:
        with self.lock:
            self.reset()


class _Stats(LockedStats):
    def reset(self):
        self.requests = Counter()
        self.status = defaultdict(Counter)
        self.faults = Counter()
        self.in_flight = Counter()
        self.max_concurrent = Counter()
        self.per_url = Counter()
        self.fault_count_per_url = Counter()

    def as_dict(self) -> dict:
        with self.lock:
            return {
                "requests": dict(self.requests),
                "status": {k: {str(c): n for c, n in v.items()} for k, v in self.status.items()},
                "faults": dict(self.faults),
                "in_flight": dict(self.in_flight),
                "max_concurrent": dict(self.max_concurrent),
                "per_url": dict(self.per_url),
            }


class LoopbackServer(ThreadingHTTPServer):
    """A threading HTTP server (daemon threads) whose handlers can end a connection with a
    reset (``LoopbackHandler._reset``); ``base_url`` is its ``http://host:port``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler):
        super().__init__(address, handler)
        self._reset_requests: set[int] = set()
        self._reset_lock = threading.Lock()

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def shutdown_request(self, request):
        with self._reset_lock:
            reset = id(request) in self._reset_requests
            self._reset_requests.discard(id(request))
        if reset:  # close with SO_LINGER 0: the client sees a connection reset
            with contextlib.suppress(OSError):
                request.close()
            return
        super().shutdown_request(request)


class EmulatorServer(LoopbackServer):
    """The emulator's HTTP server; ``archive`` answers, ``faults`` decides what goes wrong."""

    request_queue_size = 64

    def __init__(self, address, archive: SimulatedArchive, faults: Mapping | None = None):
        super().__init__(address, _Handler)
        self.archive = archive
        self.faults = _check_faults(faults)
        self.stats = _Stats()

    def decide(self, kind: str, key: str, n: int) -> dict | None:
        """The fault rule that fires for the ``n``-th request of ``key`` (or None)."""
        for i, rule in enumerate(self.faults["rules"]):
            if rule["kind"] not in (kind, "*"):
                continue
            if rule.get("match") and not re.search(rule["match"], key):
                continue
            salt = key if rule.get("permanent") else f"{key}#{n}"
            h = hashlib.sha256(f"{self.faults['seed']}|{i}|{salt}".encode()).digest()
            u = int.from_bytes(h[:8], "big") / 2.0**64
            if u >= rule["rate"]:
                continue
            limit = rule.get("max_per_url")
            with self.stats.lock:
                fired = self.stats.fault_count_per_url[(i, key)]
                if limit is not None and fired >= int(limit):
                    continue
                self.stats.fault_count_per_url[(i, key)] += 1
                self.stats.faults[rule["fault"]] += 1
            return rule
        return None


class LoopbackHandler(BaseHTTPRequestHandler):
    """Quiet request handler with the low-level helpers of both emulators."""

    server: LoopbackServer
    wait_poll_s = 0.005  # how often ``_wait`` looks whether the client went away

    def log_message(self, format, *args):  # noqa: A002 - quiet by default
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reset(self) -> None:
        """End the connection with a reset (RST) instead of an answer."""
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with self.server._reset_lock:
            self.server._reset_requests.add(id(self.connection))
        self.close_connection = True

    def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless the client disconnects first (then return False)."""
        deadline = time.monotonic() + seconds
        sock = self.connection
        poll = self.wait_poll_s
        while (left := deadline - time.monotonic()) > 0:
            r, _, _ = select.select([sock], [], [], min(left, poll))
            if r:
                try:
                    if sock.recv(1, socket.MSG_PEEK) == b"":
                        return False
                except OSError:
                    return False
                time.sleep(min(left, poll))  # a pipelined request is waiting: keep sleeping
        return True


class _Handler(LoopbackHandler):
    server: EmulatorServer
    protocol_version = "HTTP/1.0"
    server_version = "spxflow-irsa-emulator/1"

    # -------------------------------------------------------------- dispatch
    def do_GET(self):
        split = urlsplit(self.path)
        if split.path == "/__stats":
            return self._json(self.server.stats.as_dict())
        if split.path == "/__faults":
            return self._json(self.server.faults)
        kind = self._kind(split.path)
        if kind is None:
            return self._send(404, b"not found\n", "text/plain")
        if kind == "tap":
            return self._tap_request(parse_qsl(split.query, keep_blank_values=True), {})
        self._counted(kind, split)

    def do_POST(self):
        split = urlsplit(self.path)
        body = self._body()
        if split.path == "/__faults":
            try:
                self.server.faults = _check_faults(json.loads(body or b"{}"))
                with self.server.stats.lock:
                    self.server.stats.fault_count_per_url.clear()
            except (ValueError, TypeError) as exc:
                return self._send(400, f"{exc}\n".encode(), "text/plain")
            return self._json(self.server.faults)
        if split.path == "/__reset":
            self.server.stats.locked_reset()
            return self._json({"reset": True})
        if split.path.rstrip("/") == "/SIA":  # SIA2 also accepts POSTed parameters
            return self._counted("sia", urlsplit(f"/SIA?{body.decode('utf-8', 'replace')}"))
        if split.path.rstrip("/") == "/TAP/sync":
            try:
                fields, files = tapserve.parse_form(self.headers.get("Content-Type", ""), body)
            except (ValueError, TypeError) as exc:
                fields, files = [("BAD_BODY", str(exc))], {}
            return self._tap_request(fields, files)
        return self._send(405, b"method not allowed\n", "text/plain")

    def _tap_request(self, fields: list[tuple[str, str]], files: dict[str, bytes]) -> None:
        """Count and serve a TAP request under its canonical URL (see the module docstring)."""
        digest = hashlib.sha256(b"".join(files[k] for k in sorted(files))).hexdigest()[:16]
        query = urlencode([*fields, ("UPLOAD_SHA256", digest)])
        self._tap_files = files
        self._counted("tap", urlsplit(f"/TAP/sync?{query}"))

    @staticmethod
    def _kind(path: str) -> str | None:
        if path.rstrip("/") == "/SIA":
            return "sia"
        if path.rstrip("/") == "/TAP/sync":
            return "tap"
        if _CUTOUT_RE.match(path):
            return "cutout"
        if _CAL_RE.match(path):
            return "calibration"
        return None

    def _counted(self, kind: str, split) -> None:
        stats = self.server.stats
        key = split.path + ("?" + split.query if split.query else "")
        with stats.lock:
            stats.requests[kind] += 1
            stats.per_url[key] += 1
            n = stats.per_url[key]
            stats.in_flight[kind] += 1
            stats.max_concurrent[kind] = max(stats.max_concurrent[kind], stats.in_flight[kind])
            stats.in_flight["total"] += 1
            stats.max_concurrent["total"] = max(
                stats.max_concurrent["total"], stats.in_flight["total"]
            )
        code = 0
        self._counted_kind = kind
        try:
            code = self._serve(kind, split, key, n)
        except (BrokenPipeError, ConnectionResetError):
            code = -1
        finally:
            self._leave()
            with stats.lock:
                stats.status[kind][code] += 1

    def _leave(self) -> None:
        """End this request's in-flight count (once). ``_send`` calls it before the last body
        byte, so the count drops before the client can finish reading and send its next
        request: the concurrency the emulator reports is what the clients really caused."""
        kind = getattr(self, "_counted_kind", None)
        if kind is None:
            return
        self._counted_kind = None
        stats = self.server.stats
        with stats.lock:
            stats.in_flight[kind] -= 1
            stats.in_flight["total"] -= 1

    # -------------------------------------------------------------- serving
    def _serve(self, kind: str, split, key: str, n: int) -> int:
        rule = self.server.decide(kind, key, n)
        fault = rule["fault"] if rule else None
        if fault in ("429", "503", "504"):  # 504: the sync TAP gateway's timeout
            headers = {"Retry-After": str(rule.get("retry_after", 1))}
            if fault != "429" and "retry_after" not in rule:
                headers = {}
            code = int(fault)
            msg = {429: b"Too Many Requests\n", 503: b"Service Unavailable\n"}.get(
                code, b"Gateway Timeout\n"
            )
            return self._send(code, msg, "text/plain", headers)
        if fault == "reset":
            self._reset()
            return -4
        if fault == "error_votable":
            return self._send(
                200, error_votable_bytes("UsageFault: BAD_REQUEST: injected error"), "text/xml"
            )
        if fault == "no_overlap":
            return self._send(400, b"Requested cutout does not overlap the image\n", "text/plain")
        if fault == "slow":
            if not self._wait(float(rule.get("slow_s", 5.0))):
                return -2  # the client gave up
        params = _params(split.query)
        if kind == "sia":
            code, body, ctype = self._sia(params)
        elif kind == "tap":
            if params.get("BAD_BODY"):
                code, body = 400, error_votable_bytes(f"bad request: {params['BAD_BODY'][0]}")
                ctype = "application/x-votable+xml"
            else:
                code, body, ctype = tapserve.answer(
                    self.server.archive,
                    params,
                    getattr(self, "_tap_files", {}),
                    self.server.faults.get("tap_max_rows"),
                )
        elif kind == "cutout":
            code, body, ctype = self._cutout(split.path, params, force_gzip=fault == "gzip")
        else:
            code, body, ctype = self._calibration(split.path)
        if fault == "truncate" and code == 200:
            return self._send(code, body, ctype, truncate=True)
        return self._send(code, body, ctype)

    def _sia(self, params: dict[str, list[str]]) -> tuple[int, bytes, str]:
        def err(msg):
            return 200, error_votable_bytes(f"UsageFault: BAD_REQUEST: {msg}"), "text/xml"

        collections = params.get("COLLECTION", [])
        if not collections:
            return err("COLLECTION is required")
        pos = params.get("POS", [])
        if len(pos) != 1:
            return err("exactly one POS=CIRCLE ra dec radius is supported")
        parts = pos[0].split()
        if len(parts) != 4 or parts[0].upper() != "CIRCLE":
            return err(f"POS {pos[0]!r} is not CIRCLE ra dec radius")
        try:
            ra, dec, r_deg = (float(x) for x in parts[1:])
            time_lo, time_hi = -float("inf"), float("inf")
            if params.get("TIME"):
                lo, hi = params["TIME"][0].split()
                time_lo, time_hi = float(lo), float(hi)
            maxrec = int(params["MAXREC"][0]) if params.get("MAXREC") else None
        except ValueError as exc:
            return err(f"bad parameter value: {exc}")
        fmt = (params.get("RESPONSEFORMAT") or ["votable"])[0].lower()
        if fmt not in ("votable", "application/x-votable+xml", "text/xml"):
            return err(f"RESPONSEFORMAT {fmt!r} is not supported by the emulator")
        try:
            table = self.server.archive.discover(ra, dec, round(r_deg * 3600.0, 9))
        except (ValueError, ArchiveError) as exc:
            return err(str(exc))
        table = table[table["obs_collection"].isin(collections)]
        table = table[(table["t_max"] >= time_lo) & (table["t_min"] <= time_hi)]
        limit = maxrec
        server_max = self.server.faults.get("sia_max_rows")
        if server_max is not None:
            limit = server_max if limit is None else min(limit, server_max)
        status = "OK"
        if limit is not None and len(table) > limit:
            table, status = table.iloc[:limit], "OVERFLOW"
        return 200, votable_bytes(pd.DataFrame(table), status=status), "text/xml"

    def _cutout(self, path: str, params, force_gzip: bool) -> tuple[int, bytes, str]:
        center = (params.get("center") or [""])[0]
        size = (params.get("size") or [""])[0]
        m_c = re.fullmatch(r"\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*(d|deg)?\s*", center)
        m_s = re.fullmatch(r"\s*([0-9.eE+-]+)\s*(d|deg|arcmin|arcsec)?\s*", size)
        if not m_c or not m_s:
            return 400, f"bad center={center!r} or size={size!r}\n".encode(), "text/plain"
        try:
            ra, dec = float(m_c.group(1)), float(m_c.group(2))
            size_arcsec = round(float(m_s.group(1)) * _SIZE_UNITS[m_s.group(2) or ""], 9)
            data = self.server.archive.cutout_bytes(IRSA_ORIGIN + path, ra, dec, size_arcsec)
        except NoOverlapError as exc:
            return (
                400,
                f"Requested cutout does not overlap the image: {exc}\n".encode(),
                "text/plain",
            )
        except ArchiveError as exc:
            return 404, f"{exc}\n".encode(), "text/plain"
        except ValueError as exc:
            return 400, f"{exc}\n".encode(), "text/plain"
        raw = maybe_gunzip(data)
        want_gzip = (params.get("gzip") or ["true"])[0].lower() != "false"
        if want_gzip or force_gzip:
            return 200, gzip.compress(raw, compresslevel=1), "application/fits"
        return 200, raw, "application/fits"

    def _calibration(self, path: str) -> tuple[int, bytes, str]:
        m = _CAL_RE.match(path)
        release, family, det = m["release"], m["family"], int(m["det"])
        if (
            family not in CALIBRATION_TOKENS[release]
            or m["token"] != calibration_token(release, family, det)
            or m["file"] != calibration_file_name(release, family, det)
        ):
            return 404, f"no such calibration file {path}\n".encode(), "text/plain"
        data = self.server.archive.calibration_bytes(release, family, det)
        return 200, data, "application/fits"

    # -------------------------------------------------------------- low level
    def _send(self, code, body: bytes, ctype: str, headers=None, truncate=False) -> int:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if truncate:
            self.end_headers()
            self.wfile.write(body[: max(1, len(body) // 2)])
            self.wfile.flush()
            self.close_connection = True
            return -3
        if not body:
            self._leave()
            self.end_headers()
            return code
        self.end_headers()
        self.wfile.write(body[:-1])
        self.wfile.flush()
        self._leave()
        self.wfile.write(body[-1:])
        return code

    def _json(self, obj) -> None:
        self._send(200, json.dumps(obj, sort_keys=True).encode(), "application/json")


def _params(query: str) -> dict[str, list[str]]:
    """Query parameters; SIA2 names are case-insensitive (stored upper-case), cutout ones
    lower-case."""
    out: dict[str, list[str]] = defaultdict(list)
    for k, v in parse_qsl(query, keep_blank_values=True):
        out[k.upper() if k.upper() in _SIA_PARAMS else k.lower()].append(v)
    return out


_SIA_PARAMS = {"POS", "COLLECTION", "TIME", "MAXREC", "RESPONSEFORMAT", "BAND", "ID"}
_SIA_PARAMS |= {"REQUEST", "LANG", "QUERY", "FORMAT", "UPLOAD", "BAD_BODY"}  # TAP's


def archive_from(archive_cfg) -> SimulatedArchive:
    """The ``SimulatedArchive`` itself, or one from an ``archive`` mapping or workflow config."""
    if isinstance(archive_cfg, SimulatedArchive):
        return archive_cfg
    cfg = dict(archive_cfg or {})
    if "archive" in cfg:
        cfg = dict(cfg["archive"] or {})
    return SimulatedArchive.from_config(cfg.get("simulated", {}))


def start_emulator(
    archive_cfg=None, faults: Mapping | None = None, host: str = "127.0.0.1", port: int = 0
) -> tuple[EmulatorServer, threading.Thread]:
    """Start the emulator in a daemon thread; ``port=0`` picks a free port."""
    server = EmulatorServer((host, port), archive_from(archive_cfg), faults)
    return server, serve_in_thread(server)


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    """Run ``server.serve_forever`` in a started daemon thread."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    return thread


def stop_server(server: ThreadingHTTPServer, thread: threading.Thread) -> None:
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@contextlib.contextmanager
def running_emulator(
    archive_cfg=None, faults: Mapping | None = None, port: int = 0
) -> Iterator[str]:
    """Run the emulator for the ``with`` block; yields its base URL (``http://127.0.0.1:N``).

    ``archive_cfg``: the workflow's ``archive`` mapping (its ``simulated`` part is served), a
    whole workflow config, or a ``SimulatedArchive``.
    """
    server, thread = start_emulator(archive_cfg, faults, port=port)
    try:
        yield server.base_url
    finally:
        stop_server(server, thread)


# -------------------------------------------------------------------- client helpers
def get_stats(base_url: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"{base_url}/__stats", timeout=10) as resp:
        return json.loads(resp.read())


def post_json(base_url: str, path: str, obj) -> dict:
    """POST ``obj`` as JSON to ``base_url + path``; the JSON answer."""
    import urllib.request

    req = urllib.request.Request(
        f"{base_url}{path}",
        data=json.dumps(obj).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def set_faults(base_url: str, faults: Mapping | None) -> dict:
    return post_json(base_url, "/__faults", dict(faults or {}))


def reset_stats(base_url: str) -> dict:
    return post_json(base_url, "/__reset", {})


# -------------------------------------------------------------------- CLI
def serve_cli(argv, module: str, doc: str, default_port: int, start, banner: str) -> int:
    """The CLI of the emulator ``module`` (described by the first line of ``doc``): parse
    ``--port/--host/--config/--faults``, start the server with ``start(cfg, faults, host=,
    port=) -> (server, thread)``, print ``banner`` (``{url}``: its base URL) and serve until
    interrupted. Returns the exit code."""
    p = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n")[0])
    p.add_argument("--port", type=int, default=default_port, help="0 picks a free port")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--config", help="workflow config YAML (its archive.simulated is served)")
    p.add_argument("--faults", help="fault configuration: JSON text or a JSON file path")
    args = p.parse_args(argv)
    cfg = {}
    if args.config:
        import yaml

        cfg = yaml.safe_load(Path(args.config).read_text()) or {}
    faults = None
    if args.faults:
        text = args.faults
        if not text.lstrip().startswith("{") and Path(text).is_file():
            text = Path(text).read_text()
        faults = json.loads(text)
    try:
        server, thread = start(cfg, faults, host=args.host, port=args.port)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(banner.format(url=server.base_url), file=sys.stderr, flush=True)
    try:
        while thread.is_alive():
            thread.join(0.5)
    except KeyboardInterrupt:
        server.shutdown()
    server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    banner = "IRSA emulator on {url} (set archive.irsa.base_url_override to it)"
    return serve_cli(argv, "spxflow.archive.emulator", __doc__, 8765, start_emulator, banner)


if __name__ == "__main__":
    sys.exit(main())
