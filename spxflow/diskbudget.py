"""A bound on the disk held by live cutouts, shared by every job of a run.

Cutouts of a source live in ``data/cutouts/{source}/`` while its ``measure`` job fetches and
measures them, and are deleted when it succeeds (unless ``cleanup: never``). Snakemake's own
``--resources`` are released when a job ends, so they can bound concurrent *downloads* but not
cutouts *kept on disk*. This module bounds the latter: before fetching, a ``measure`` job
reserves an upper-bound estimate of its bytes in a small state directory next to the cutouts;
it fetches only when

    (bytes on disk under the cutouts root) + (other in-flight reservations) + (its own) <= limit

and otherwise waits (polling) until other sources' measure jobs free space. The reservation
ends with the fetch; from then on the real files count. The state is plain files guarded by a
POSIX lock, so it works across processes and across Slurm nodes sharing the work directory.

Guarantees and limits:
- The bound holds as long as the estimate is an upper bound (``estimate_cutout_bytes`` is, for
  the QR2 format: PSF cube + four image-size HDUs + WCS-WAVE, each rounded to FITS blocks).
- A source whose cutouts alone exceed the limit fails at once (raise the limit), never exceeds.
- With ``cleanup: never`` nothing frees space, so a job that does not fit fails at once.
- Waiting is bounded (``max_wait_s``): if the run cannot make progress (e.g. every core holds a
  waiting ``measure`` job), the job fails with an explanation and Snakemake's retry re-runs it
  later.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import random
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from spxflow.format import NPIX, PIXEL_SCALE_ARCSEC, PSF_NZONE, PSF_SIZE

log = logging.getLogger(__name__)

FITS_BLOCK = 2880
_HEADER_ALLOWANCE = 12 * FITS_BLOCK  # per HDU; real headers are 5-509 cards (<= 15 blocks)
STATE_DIR_NAME = ".cutout_budget"
GB = 1_000_000_000


class DiskBudgetError(RuntimeError):
    """The cutouts of a source cannot be fetched within the configured disk bound."""


def _blocks(nbytes: int) -> int:
    return FITS_BLOCK * math.ceil(nbytes / FITS_BLOCK)


def estimate_cutout_bytes(n_images: int, size_arcsec: float) -> int:
    """Upper bound of the bytes of ``n_images`` QR2 cutouts of ``size_arcsec`` (uncompressed).

    Per image: PRIMARY, IMAGE/FLAGS/VARIANCE/ZODI (n x n x 4 bytes, n = round(size / 6.15"),
    at most the detector), PSF (11 x 11 zones of 101 x 101 float32, ~4.9 MB, which dominates)
    and WCS-WAVE (small table), each with a generous header allowance.
    """
    n = min(NPIX, max(1, int(round(float(size_arcsec) / PIXEL_SCALE_ARCSEC))))
    per_image = (
        7 * _HEADER_ALLOWANCE
        + 4 * _blocks(n * n * 4)
        + _blocks(PSF_NZONE * PSF_NZONE * PSF_SIZE * PSF_SIZE * 4)
        + 4 * FITS_BLOCK
    )
    return int(n_images) * per_image


def tree_bytes(path: str | os.PathLike) -> int:
    """Bytes allocated on disk under ``path`` (files only; st_blocks, as `du`)."""
    total = 0
    try:
        entries = list(os.scandir(path))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for e in entries:
        try:
            if e.is_dir(follow_symlinks=False):
                total += tree_bytes(e.path)
            elif e.is_file(follow_symlinks=False):
                st = e.stat(follow_symlinks=False)
                total += max(st.st_blocks * 512, st.st_size)
        except FileNotFoundError:  # deleted while we looked (another job's cleanup)
            continue
    return total


@dataclass
class CutoutDiskBudget:
    """Disk budget for the cutout directories under ``root`` (one directory per source)."""

    root: str
    limit_bytes: int | None
    can_wait: bool = True
    max_wait_s: float = 600.0
    poll_s: float = 2.0

    @property
    def state_dir(self) -> Path:
        return Path(self.root).parent / STATE_DIR_NAME

    @classmethod
    def from_runtime(cls, runtime, root: str) -> CutoutDiskBudget:
        """From ``spxflow.settings.Runtime``: config keys max_live_cutout_gb, cleanup and
        cutout_budget_max_wait_s."""
        gb = runtime.max_live_cutout_gb
        return cls(
            root=str(root),
            limit_bytes=None if gb is None else int(float(gb) * GB),
            can_wait=runtime.cleanup != "never",
            max_wait_s=float(runtime.cutout_budget_max_wait_s),
        )

    # ------------------------------------------------------------------ accounting
    def _reservations(self) -> dict[str, dict]:
        out = {}
        for f in self.state_dir.glob("*.reservation.json"):
            try:
                r = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if self._stale(r):
                log.warning("dropping stale cutout reservation %s (%s)", f.name, r)
                f.unlink(missing_ok=True)
                continue
            out[r["key"]] = r
        return out

    @staticmethod
    def _stale(r: dict) -> bool:
        if r.get("host") != socket.gethostname():
            return time.time() - float(r.get("time", 0)) > 7 * 86400
        try:
            os.kill(int(r["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, KeyError, ValueError):
            return False
        return False

    def usage_bytes(self, exclude: str | None = None) -> int:
        """Live cutout bytes now: every directory under root at its size on disk, except that an
        in-flight fetch counts as max(its reservation, what it has written so far)."""
        reservations = self._reservations()
        total = 0
        seen = set()
        root = Path(self.root)
        if root.is_dir():
            for d in os.scandir(root):
                if d.name == exclude:
                    continue
                seen.add(d.name)
                size = tree_bytes(d.path) if d.is_dir() else os.stat(d.path).st_blocks * 512
                r = reservations.get(d.name)
                total += max(size, int(r["bytes"])) if r else size
        for key, r in reservations.items():
            if key not in seen and key != exclude:
                total += int(r["bytes"])
        return total

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / "lock", "a+") as fh:
            fcntl.lockf(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.lockf(fh, fcntl.LOCK_UN)

    # ------------------------------------------------------------------ reserve
    @contextmanager
    def reserve(self, key: str, nbytes: int) -> Iterator[int]:
        """Block until ``nbytes`` for source ``key`` fit in the budget, hold them while the
        body fetches into ``root/key``, then release (the files on disk count from then on).
        Yields the live bytes (others + this reservation) at the moment of reservation."""
        if self.limit_bytes is None:
            yield 0
            return
        limit = self.limit_bytes
        if nbytes > limit:
            raise DiskBudgetError(
                f"source {key}: its cutouts need up to {nbytes / GB:.2f} GB, more than "
                f"max_live_cutout_gb={limit / GB:g}; raise max_live_cutout_gb (or use a smaller "
                f"cutout size) for this catalog"
            )
        t0 = time.monotonic()
        waited_note = False
        path = self.state_dir / f"{key}.reservation.json"
        while True:
            with self._locked():
                used = self.usage_bytes(exclude=key)
                if used + nbytes <= limit:
                    record = {
                        "key": key,
                        "bytes": int(nbytes),
                        "host": socket.gethostname(),
                        "pid": os.getpid(),
                        "time": time.time(),
                    }
                    tmp = path.with_suffix(".tmp")
                    tmp.write_text(json.dumps(record))
                    os.replace(tmp, path)
                    live = used + nbytes
                    break
            if not self.can_wait:
                raise DiskBudgetError(
                    f"source {key}: {nbytes / GB:.2f} GB of cutouts do not fit: "
                    f"{used / GB:.2f} GB of max_live_cutout_gb={limit / GB:g} are already held "
                    f"by kept cutouts and cleanup=never frees nothing; raise "
                    f"max_live_cutout_gb, free data/cutouts/ or use cleanup=success-after-source"
                )
            waited = time.monotonic() - t0
            if waited > self.max_wait_s:
                raise DiskBudgetError(
                    f"source {key}: waited {waited:.0f} s for {nbytes / GB:.2f} GB of cutout "
                    f"disk ({used / GB:.2f} of {limit / GB:g} GB live); no photometry freed "
                    f"space. The job will be retried; if this repeats, raise "
                    f"max_live_cutout_gb or cutout_budget_max_wait_s, or run fewer jobs at once"
                )
            if not waited_note:
                log.info(
                    "source %s: waiting for %.0f MB of cutout disk (%.0f of %.0f MB live)",
                    key,
                    nbytes / 1e6,
                    used / 1e6,
                    limit / 1e6,
                )
                waited_note = True
            time.sleep(self.poll_s * (0.5 + random.random()))
        log.info(
            "source %s: reserved %.0f MB of cutout disk after %.1f s (live %.0f of %.0f MB)",
            key,
            nbytes / 1e6,
            time.monotonic() - t0,
            live / 1e6,
            limit / 1e6,
        )
        try:
            yield live
        finally:
            with self._locked():
                path.unlink(missing_ok=True)
