"""A byte-range client fit for an object store (S3 ``GetObject`` with one ``Range`` per GET).

- Pooled keep-alive connections (aiohttp, ``max_concurrency`` per client) on the process's
  range loop (``loop.py``), and a process-wide cap on requests in flight per host, shared by
  every thread; ``get_round`` sends a round of GETs of one object with one thread hand-off.
- ``get`` sends ``Range: bytes=a-b``, requires ``206`` with a matching ``Content-Range`` (a
  ``200`` is accepted only as the whole object, then sliced) and a body of exactly the range.
- Transient failures (5xx, ``SlowDown``, 429, timeouts, resets, refused connections, short
  bodies) are retried with exponential backoff and full jitter, ``Retry-After`` honoured, on a
  fresh connection. ``412`` raises ``ObjectChanged`` at once (the object behind an ``If-Match``
  ETag was replaced), ``403``/``404`` raise ``ObjectUnavailable`` with S3's ``Code``/``Message``.
- Only ``base_url``'s host (or ``allowed_hosts``) is ever contacted: absolute keys, ``..`` and
  foreign hosts raise ``ForbiddenLocation`` before any connection is made.

Library choice and measurements: docs/s3.md.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import re
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

import aiohttp

from spxflow.archive.base import ArchiveError
from spxflow.archive.http import parse_retry_after
from spxflow.ranges import loop
from spxflow.ranges.loop import run

USER_AGENT = "spxflow (SPHEREx spectra workflow; range reader; aiohttp)"
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
MAX_IGNORED_RANGE_BYTES = 16 << 20  # largest whole object accepted from a server ignoring Range
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_BAD_KEY_CHARS = re.compile(r"[\x00-\x1f?#]")


class RangeReadError(ArchiveError):
    """A range read failed for good (after ``attempts`` tries, or a permanent answer)."""

    def __init__(self, message: str, *, key: str = "", attempts: int = 0, cause: str = ""):
        super().__init__(message)
        self.key, self.attempts, self.cause = key, attempts, cause


class ObjectChanged(ArchiveError):
    """HTTP 412: the object no longer has the ETag sent as ``If-Match`` (it was replaced)."""

    def __init__(self, message: str, *, key: str = "", etag: str = ""):
        super().__init__(message)
        self.key, self.etag = key, etag


class ObjectUnavailable(ArchiveError):
    """HTTP 403/404: no such object, or no permission; ``status``, S3 ``code``, ``key``."""

    def __init__(self, message: str, *, status: int, code: str = "", key: str = ""):
        super().__init__(message)
        self.status, self.code, self.key = status, code, key


class ForbiddenLocation(ArchiveError):
    """A key or URL outside the configured bucket (refused before any connection)."""


@dataclass(frozen=True)
class Ranged:
    """Bytes ``[start, start + len(data))`` of an object of ``total`` bytes with ``etag``;
    ``attempts`` HTTP requests were sent to get them."""

    data: bytes
    start: int
    total: int
    etag: str
    attempts: int = 1

    @property
    def end(self) -> int:
        return self.start + len(self.data)


class _Transient(Exception):
    """One attempt failed in a way another attempt may fix."""

    def __init__(self, cause: str, retry_after: float | None = None):
        super().__init__(cause)
        self.retry_after = retry_after


class _Limiter:
    """At most ``limit`` requests in flight; the limit can change while in use. Used on the
    range loop only, so a counter and a queue of waiters need no lock."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_flight = 0
        self._waiters: collections.deque[asyncio.Future] = collections.deque()

    async def __aenter__(self):
        while self.in_flight >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter  # woken by __aexit__ (or resize); then checks again
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake(1)  # woken, then cancelled: pass the free slot on
                raise
        self.in_flight += 1

    async def __aexit__(self, *exc):
        self.in_flight -= 1
        self._wake(1)

    def _wake(self, n: int) -> None:
        while n > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # a cancelled waiter is skipped
                waiter.set_result(None)
                n -= 1

    async def resize(self, limit: int) -> None:
        self.limit = limit
        self._wake(len(self._waiters))


# One limiter per (scheme, host:port) for the whole process: every client and thread of a job
# shares it. A new client sets the limit (one job configures one client). Loop thread only.
_LIMITERS: dict[tuple[int, str, str], _Limiter] = {}  # (pid: a forked child has its own loop)


async def _limiter(scheme: str, netloc: str, limit: int) -> _Limiter:
    key = (os.getpid(), scheme, netloc)
    lim = _LIMITERS.get(key)
    if lim is None:
        lim = _LIMITERS[key] = _Limiter(limit)
    else:
        await lim.resize(limit)
    return lim


def _s3_error(body: bytes) -> tuple[str, str]:
    """(Code, Message) of an S3 XML error document ('' when absent)."""
    text = body[:4096].decode("utf-8", "replace")
    code = re.search(r"<Code>\s*([^<]*?)\s*</Code>", text)
    msg = re.search(r"<Message>\s*([^<]*?)\s*</Message>", text)
    return (code[1] if code else ""), (msg[1] if msg else "")


def _host_of(netloc: str) -> str:
    return (urlsplit(f"//{netloc}").hostname or "").lower()


def key_from_url(url: str, base_url: str) -> str:
    """The object key of an http(s) ``url`` on ``base_url``'s host and under its path;
    ForbiddenLocation for any other location."""
    u, b = urlsplit(str(url)), urlsplit(str(base_url))
    if u.scheme not in ("http", "https") or u.netloc.lower() != b.netloc.lower():
        raise ForbiddenLocation(f"{url!r} is not on the configured host {b.netloc!r}")
    if u.query or u.fragment:
        raise ForbiddenLocation(f"{url!r}: a query or fragment is not an object key")
    prefix = b.path.rstrip("/") + "/"
    if not u.path.startswith(prefix):
        raise ForbiddenLocation(f"{url!r} is not under {base_url!r}")
    key = unquote(u.path[len(prefix) :])
    _check_key(key)
    return key


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not key or key.startswith("/"):
        raise ForbiddenLocation(f"{key!r} is not a relative object key")
    if _SCHEME_RE.match(key) or ".." in key or "\\" in key:
        raise ForbiddenLocation(f"{key!r} is not a plain object key (absolute or '..')")
    if _BAD_KEY_CHARS.search(key):
        raise ForbiddenLocation(f"{key!r} holds control characters, '?' or '#'")


class RangeClient:
    """Byte ranges of objects under ``base_url`` (see the module docstring). Thread-safe: any
    thread may call it; the requests run on the process's range loop (``loop.py``)."""

    def __init__(
        self,
        base_url: str,
        *,
        max_concurrency: int = 32,
        timeout_s: float = 30,
        attempts: int = 6,
        backoff_s: float = 0.2,
        backoff_max_s: float = 8.0,
        allowed_hosts: Sequence[str] | None = None,
    ):
        parts = urlsplit(str(base_url))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"range client: base_url {base_url!r} is not an http(s) URL")
        if max_concurrency < 1 or attempts < 1 or timeout_s <= 0:
            raise ValueError(
                "range client: max_concurrency and attempts must be >= 1 and timeout_s > 0"
            )
        self.base_url = str(base_url).rstrip("/")
        self.netloc = parts.netloc.lower()
        hosts = [parts.netloc] if allowed_hosts is None else list(allowed_hosts)
        self.allowed_hosts = frozenset(h.lower() for h in hosts)
        self.max_concurrency = int(max_concurrency)
        self.timeout_s = float(timeout_s)
        self.attempts = int(attempts)
        self.backoff_s = float(backoff_s)
        self.backoff_max_s = float(backoff_max_s)
        self._rng = random.Random()
        self._lock = threading.Lock()
        self.reset_stats()
        self._limit = run(_limiter(parts.scheme, self.netloc, self.max_concurrency))
        # The session lives in a box, so a client collected without close() can still have
        # its connections closed on the loop (weakref.finalize must not hold the client).
        self._box: list[aiohttp.ClientSession | None] = [None]
        weakref.finalize(self, lambda box: loop.close_soon(box[0]), self._box)

    # ------------------------------------------------------------------ locations
    def url_for(self, key: str) -> str:
        """``base_url/key``; ForbiddenLocation for absolute keys, ``..`` or a host that is
        not allowed (nothing is contacted)."""
        _check_key(key)
        url = f"{self.base_url}/{quote(key, safe='/-_.~!$&()*+,;=:@')}"
        netloc = urlsplit(url).netloc.lower()
        if netloc not in self.allowed_hosts and _host_of(netloc) not in self.allowed_hosts:
            raise ForbiddenLocation(f"{url!r}: host {netloc!r} is not allowed")
        return url

    # ------------------------------------------------------------------ requests
    def get(self, key: str, start: int, end: int, *, if_match: str | None = None) -> Ranged:
        """Bytes ``[start, end)`` of ``key`` (clamped at the object's end, as S3 does)."""
        return run(self._get(key, start, end, if_match))

    def get_round(
        self, key: str, spans: dict[str, tuple[int, int]], *, if_match: str | None = None
    ) -> dict[str, Ranged | Exception]:
        """Every ``name: (start, end)`` of ``spans`` fetched concurrently; each name maps to
        its ``Ranged`` or to the exception that ended it (all requests are waited for)."""
        url = self.url_for(key)  # ForbiddenLocation before any request

        async def one_round():
            names = list(spans)
            got = await asyncio.gather(
                *(self._get(key, *spans[n], if_match, url) for n in names),
                return_exceptions=True,
            )
            return dict(zip(names, got, strict=True))

        out = run(one_round())
        for v in out.values():
            if isinstance(v, BaseException) and not isinstance(v, Exception):
                raise v  # KeyboardInterrupt, CancelledError: not a per-request outcome
        return out

    def head(self, key: str) -> tuple[int, str]:
        """(size in bytes, ETag) of ``key``."""

        def check(resp, body: bytes) -> tuple[int, str]:
            size = resp.headers.get("Content-Length")
            if resp.status != 200 or size is None:
                raise RangeReadError(f"HEAD {key}: HTTP {resp.status} without a size", key=key)
            return int(size), resp.headers.get("ETag", "")

        return run(self._request("HEAD", key, {}, f"HEAD {key}", check))

    async def _get(
        self, key: str, start: int, end: int, if_match: str | None, url: str | None = None
    ) -> Ranged:
        start, end = int(start), int(end)
        if start < 0 or end <= start:
            raise ValueError(f"{key}: empty or negative range [{start}, {end})")
        headers = {"Range": f"bytes={start}-{end - 1}"}
        if if_match:
            headers["If-Match"] = if_match
        what = f"{key} bytes [{start}, {end})"

        def check(resp, body: bytes) -> Ranged:
            etag = resp.headers.get("ETag", "")
            if resp.status == 200:  # the server ignored Range: the whole object
                total = len(body)
                if start >= total:
                    raise RangeReadError(
                        f"{what}: starts past the end of the {total}-byte object", key=key
                    )
                return Ranged(body[start:end], start, total, etag)
            m = _CONTENT_RANGE_RE.match(resp.headers.get("Content-Range", ""))
            if m is None or m[3] == "*":
                raise RangeReadError(
                    f"{what}: 206 with bad Content-Range {resp.headers.get('Content-Range')!r}",
                    key=key,
                )
            a, b, total = int(m[1]), int(m[2]), int(m[3])
            if a != start or b != min(end, total) - 1:
                raise RangeReadError(f"{what}: server sent Content-Range {m[0].strip()!r}", key=key)
            if len(body) != b - a + 1:
                raise _Transient(f"truncated body ({len(body)} of {b - a + 1} bytes)")
            return Ranged(body, start, total, etag)

        return await self._request("GET", key, headers, what, check, url)

    async def _request(self, method: str, key: str, headers: dict, what: str, check, url=None):
        url = url or self.url_for(key)
        cause = ""
        for attempt in range(1, self.attempts + 1):
            retry_after = None
            try:
                out = await self._attempt(method, url, key, headers, what, check)
                if isinstance(out, Ranged):
                    out = Ranged(out.data, out.start, out.total, out.etag, attempt)
                return out
            except _Transient as exc:
                cause, retry_after = str(exc), exc.retry_after
            except ArchiveError as exc:  # permanent: 412, 403/404, 416, a bad Content-Range
                exc.attempts = attempt
                raise
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                cause = f"{type(exc).__name__}: {exc}"
            if attempt == self.attempts:
                break
            with self._lock:
                self._stats["retries"] += 1
            await asyncio.sleep(self._delay(attempt, retry_after))
        raise RangeReadError(
            f"{what}: failed after {self.attempts} attempts; last: {cause}",
            key=key,
            attempts=self.attempts,
            cause=cause,
        )

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Full jitter: uniform in [0, min(max, base * 2^(attempt-1))]; at least
        ``Retry-After`` (capped at ``backoff_max_s``) when the server sent one."""
        with self._lock:
            d = self._rng.uniform(0, min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1)))
        if retry_after is not None:
            d = max(d, min(retry_after, self.backoff_max_s))
        return d

    def _pool(self) -> aiohttp.ClientSession:
        """The client's keep-alive connections (made on the loop at the first request)."""
        if self._box[0] is None:
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_concurrency, limit_per_host=0),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.timeout_s, sock_read=self.timeout_s
                ),
                headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
                auto_decompress=False,
            )
            # aiohttp silently re-sends a GET whose reused connection was reset; our retry
            # loop does that (counted, with backoff), so the counters match the server's.
            # tests/test_ranges.py::test_transient_faults_are_retried fails if this is lost.
            if hasattr(session, "_retry_connection"):
                session._retry_connection = False
            loop.opened(session)
            self._box[0] = session
        return self._box[0]

    async def _attempt(self, method: str, url, key: str, headers: dict, what: str, check):
        async with self._limit:
            self._count(key, requests=1)
            async with self._pool().request(
                method, url, headers=headers, allow_redirects=False
            ) as resp:
                ok = False
                try:
                    size = resp.headers.get("Content-Length")
                    if method == "GET" and resp.status == 200 and size is not None:
                        if int(size) > MAX_IGNORED_RANGE_BYTES:
                            raise RangeReadError(
                                f"{what}: the server ignored Range and sends all {size} bytes",
                                key=key,
                                attempts=1,
                            )
                    body = await resp.read() if method == "GET" else b""
                    self._count(key, nbytes=len(body))
                    if resp.status not in (200, 206):
                        return self._failed(resp, body, key, what, headers)
                    out = check(resp, body)
                    ok = True
                    return out
                finally:
                    if not ok:
                        resp.close()  # drop the connection: the next attempt gets a fresh one

    def _failed(self, resp, body: bytes, key: str, what: str, headers: dict):
        code, message = _s3_error(body)
        detail = (
            f"HTTP {resp.status}"
            + (f" {code}" if code else "")
            + (f": {message}" if message else "")
        )
        if resp.status == 412:
            raise ObjectChanged(
                f"{what}: {detail} (If-Match {headers.get('If-Match')!r}: the object was replaced)",
                key=key,
                etag=headers.get("If-Match", ""),
            )
        if resp.status in (403, 404):
            raise ObjectUnavailable(f"{what}: {detail}", status=resp.status, code=code, key=key)
        if resp.status in RETRY_STATUS or resp.status >= 500 or code == "SlowDown":
            raise _Transient(detail, parse_retry_after(resp.headers.get("Retry-After")))
        raise RangeReadError(f"{what}: {detail}", key=key, attempts=1, cause=detail)

    # ------------------------------------------------------------------ counters
    def _count(self, key: str, requests: int = 0, nbytes: int = 0) -> None:
        with self._lock:
            s = self._stats
            s["requests"] += requests
            s["bytes"] += nbytes
            k = s["keys"].setdefault(key, {"requests": 0, "bytes": 0})
            k["requests"] += requests
            k["bytes"] += nbytes

    def stats(self) -> dict:
        """{'requests', 'bytes', 'retries', 'keys': {key: {'requests', 'bytes'}}} so far
        (requests = HTTP requests sent, retries included; bytes = body bytes received)."""
        with self._lock:
            s = self._stats
            return {
                "requests": s["requests"],
                "bytes": s["bytes"],
                "retries": s["retries"],
                "keys": {k: dict(v) for k, v in s["keys"].items()},
            }

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = {"requests": 0, "bytes": 0, "retries": 0, "keys": {}}

    async def _close(self) -> None:
        session, self._box[0] = self._box[0], None
        if session is not None:
            loop.closed(session)
            await session.close()

    def close(self) -> None:
        """Close the keep-alive connections (a later request opens new ones)."""
        run(self._close())

    def __enter__(self) -> RangeClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
