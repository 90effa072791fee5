"""Retrying, streaming HTTP downloads with a per-host concurrency limit.

- ``RetryPolicy``: attempts, exponential backoff with jitter, ``Retry-After`` honoured (capped).
- ``HostSlots``: at most ``limit`` requests in flight per host, shared by every thread *and every
  process* of the machine (one ``flock``-ed slot file per slot under ``lock_dir``), so that
  parallel Snakemake jobs together stay under IRSA's limit.
- ``download()``: GET streamed to ``<name>.part``, gzip detected by magic bytes, validated by a
  caller-supplied function, then renamed atomically; sha256 returned. Transient failures (429,
  5xx, timeouts, resets, truncated or corrupt bodies) are retried; HTTP 400 "no overlap" raises
  ``NoOverlapError`` at once; other 4xx and HTTP-200 error documents are permanent. A failed
  download leaves neither a ``.part`` nor a file under the final name.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import fcntl
import gzip
import hashlib
import logging
import os
import random
import re
import shutil
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3.exceptions

from spxflow.archive.base import ArchiveError, NoOverlapError

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
CHUNK = 1 << 16
ABANDON_HOLD_S = 0.05  # slot kept after a timed-out request (see _fetch_to_part)
USER_AGENT = "spxflow (SPHEREx spectra workflow; python-requests)"


class DownloadError(ArchiveError):
    """A download failed; ``transient`` says whether another attempt may succeed."""

    def __init__(self, message: str, *, transient: bool, retry_after: float | None = None):
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after
        self.attempts = 0  # set by download(): attempts made


@dataclass
class RetryPolicy:
    attempts: int = 6
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based): "equal jitter"
        exponential backoff (half fixed, half random), or ``Retry-After`` when the server
        gave one; both capped at ``backoff_max_s``."""
        cap = max(self.backoff_max_s, 0.0)
        if retry_after is not None:
            return min(max(retry_after, 0.0), cap) + self.rng.uniform(0, 0.1 * self.backoff_base_s)
        d = min(cap, self.backoff_base_s * 2 ** (attempt - 1))
        return d / 2 + self.rng.uniform(0, d / 2)

    def run(self, func: Callable, what: str, sleep: Callable = time.sleep):
        """Call ``func()`` until it succeeds, raises a permanent error, or attempts run out.
        Retries ``DownloadError(transient=True)`` and errors with a ``code`` in RETRY_STATUS or
        none at all (connection failures)."""
        for attempt in range(1, self.attempts + 1):
            try:
                return func()
            except NoOverlapError:
                raise
            except ArchiveError as exc:
                transient = getattr(exc, "transient", None)
                if transient is None:
                    code = getattr(exc, "code", "not-set")
                    transient = code is None or code in RETRY_STATUS
                if not transient or attempt == self.attempts:
                    raise
                wait = self.delay(attempt, getattr(exc, "retry_after", None))
                log.info("%s: attempt %d failed (%s); retrying in %.2fs", what, attempt, exc, wait)
                sleep(wait)
        raise AssertionError("unreachable")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


class HostSlots:
    """At most ``limit`` concurrent requests per host across threads and processes.

    Slot ``i`` of host ``h`` is the exclusive ``flock`` of ``lock_dir/<h>.<i>.lock``; each
    acquisition opens its own file description, so threads of one process exclude each other
    exactly as processes do. Waiting polls every few milliseconds.
    """

    def __init__(self, limit: int, lock_dir: str | os.PathLike | None = None):
        if limit < 1:
            raise ValueError(f"per-host concurrency limit must be >= 1, got {limit}")
        self.limit = int(limit)
        base = Path(lock_dir) if lock_dir else Path(tempfile.gettempdir()) / "spxflow-host-slots"
        base.mkdir(parents=True, exist_ok=True)
        self.lock_dir = base
        self._rng = random.Random()

    def _paths(self, url: str) -> list[Path]:
        host = re.sub(r"[^A-Za-z0-9._-]", "_", urlsplit(url).netloc or "local")
        return [self.lock_dir / f"{host}.{i}.lock" for i in range(self.limit)]

    @contextlib.contextmanager
    def __call__(self, url: str) -> Iterator[int]:
        paths = self._paths(url)
        start = self._rng.randrange(self.limit)
        while True:
            for k in range(self.limit):
                i = (start + k) % self.limit
                fd = os.open(paths[i], os.O_RDWR | os.O_CREAT, 0o666)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    os.close(fd)
                    if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                        raise
                    continue
                try:
                    yield i
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    os.close(fd)
                return
            time.sleep(0.002 + self._rng.uniform(0, 0.008))


def rewrite_url(url: str, base_url_override: str | None) -> str:
    """Replace scheme and host of ``url`` by those of ``base_url_override`` (path kept)."""
    if not base_url_override:
        return url
    new = urlsplit(base_url_override)
    old = urlsplit(url)
    prefix = new.path.rstrip("/")
    return urlunsplit((new.scheme, new.netloc, prefix + old.path, old.query, old.fragment))


class _TimeoutAdapter(requests.adapters.HTTPAdapter):
    """Applies a default timeout to requests that set none (pyvo's SIA2 queries)."""

    def __init__(self, timeout_s: float | None, **kwargs):
        self.default_timeout = timeout_s
        super().__init__(**kwargs)

    def send(self, request, **kwargs):
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.default_timeout
        return super().send(request, **kwargs)


def make_session(pool_size: int = 8, timeout_s: float | None = None) -> requests.Session:
    """A ``requests.Session`` with a connection pool per host and a default timeout."""
    s = requests.Session()
    s.headers["User-Agent"] = USER_AGENT
    adapter = _TimeoutAdapter(timeout_s, pool_connections=4, pool_maxsize=pool_size)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    return s


@dataclass
class Downloaded:
    path: str
    size_bytes: int
    sha256: str
    attempts: int
    gzipped: bool


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    session: requests.Session,
    timeout_s: float,
    policy: RetryPolicy,
    slots: HostSlots | None = None,
    validate: Callable[[Path], str] | None = None,
    params: dict | None = None,
    sleep: Callable = time.sleep,
) -> Downloaded:
    """Download ``url`` to ``dest`` with retries; see the module docstring.

    ``validate(path)`` returns "" for a good file or the reason it is bad (a bad body counts as
    a transient failure: truncation without Content-Length shows up here). Raises
    ``NoOverlapError`` (HTTP 400 no overlap) or ``DownloadError`` with the last reason.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    state = {"attempts": 0, "gzipped": False}

    def attempt():
        state["attempts"] += 1
        try:
            state["gzipped"] = _fetch_to_part(url, part, session, timeout_s, slots, params)
            if validate is not None:
                problem = validate(part)
                if problem:
                    raise DownloadError(f"invalid body: {problem}", transient=True)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
            raise

    try:
        policy.run(attempt, f"GET {url}", sleep=sleep)
    except DownloadError as exc:
        err = DownloadError(
            f"{exc} (after {state['attempts']} attempt(s))", transient=exc.transient
        )
        err.attempts = state["attempts"]
        raise err from None
    except NoOverlapError:
        raise
    digest = _sha256(part)
    size = part.stat().st_size
    os.replace(part, dest)
    return Downloaded(str(dest), size, digest, state["attempts"], state["gzipped"])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _fetch_to_part(url, part: Path, session, timeout_s, slots, params) -> bool:
    """One GET streamed into ``part`` (decompressed if the body is gzip); returns gzipped."""
    ctx = slots(url) if slots is not None else contextlib.nullcontext()
    got = {"received": 0, "expected": None}
    try:
        with ctx:
            try:
                resp = session.get(url, params=params, stream=True, timeout=timeout_s)
                with resp:
                    _check_status(resp, url)
                    expected = resp.headers.get("Content-Length")
                    got["expected"] = int(expected) if expected and expected.isdigit() else None
                    with open(part, "wb") as fh:
                        for chunk in resp.raw.stream(CHUNK, decode_content=False):
                            fh.write(chunk)
                            got["received"] += len(chunk)
                    if got["expected"] is not None and got["received"] != got["expected"]:
                        raise DownloadError(_truncated(got), transient=True)
            except (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError):
                # The server may still be working on the abandoned request: keep the slot a
                # moment so that the host does not see one request more than the limit.
                time.sleep(ABANDON_HOLD_S)
                raise
    except (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError) as exc:
        raise DownloadError(f"timeout after {timeout_s}s: {_short(exc)}", transient=True) from None
    except (
        requests.exceptions.RequestException,
        urllib3.exceptions.HTTPError,
        OSError,
    ) as exc:
        if got["received"] or "IncompleteRead" in str(exc):
            raise DownloadError(f"{_truncated(got)} ({_short(exc)})", transient=True) from None
        raise DownloadError(f"connection failed: {_short(exc)}", transient=True) from None
    with open(part, "rb") as fh:
        head = fh.read(4096)
    if head[:2] == GZIP_MAGIC:
        _gunzip_in_place(part)
        return True
    message = _error_document(head, part)
    if message is not None:
        raise DownloadError(f"HTTP 200 error document: {message}", transient=False)
    return False


def _truncated(got: dict) -> str:
    total = got["expected"] if got["expected"] is not None else "?"
    return f"truncated body: connection closed after {got['received']} of {total} bytes"


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) < 300 else text[:300] + "..."


def _check_status(resp: requests.Response, url: str) -> None:
    code = resp.status_code
    if 200 <= code < 300:
        return
    try:
        body = resp.raw.read(65536, decode_content=True) or b""
    except Exception:  # noqa: BLE001 - the status is what matters
        body = b""
    text = _error_text(body)
    if code == 400 and ("overlap" in text.lower() or not text):
        raise NoOverlapError(f"HTTP 400: no overlap ({text or 'no message'})")
    if code in RETRY_STATUS:
        raise DownloadError(
            f"HTTP {code}" + (f": {text}" if text else ""),
            transient=True,
            retry_after=parse_retry_after(resp.headers.get("Retry-After")),
        )
    raise DownloadError(f"HTTP {code}" + (f": {text}" if text else ""), transient=False)


def _error_text(body: bytes) -> str:
    from spxflow.archive.sia import error_votable_message

    msg = error_votable_message(body)
    if msg is not None:
        return msg
    text = body.decode("utf-8", "replace")
    text = re.sub(r"<[^>]+>", " ", text)
    return " ".join(text.split())[:300]


def _error_document(head: bytes, part: Path) -> str | None:
    from spxflow.archive.sia import error_votable_message

    stripped = head.lstrip()
    if stripped.startswith(b"<"):
        return error_votable_message(part.read_bytes()) or "XML/HTML document instead of FITS"
    return None


def _gunzip_in_place(part: Path) -> None:
    tmp = part.with_name(part.name + ".gunzip")
    try:
        with gzip.open(part, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)
        os.replace(tmp, part)
    except (EOFError, OSError, zlib.error) as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise DownloadError(f"corrupt gzip body: {exc}", transient=True) from None
