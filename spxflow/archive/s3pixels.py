"""Measurement windows of IRSA discovery rows, read by byte ranges from the public S3 copy.

The IRSA backend's ``pixels: s3`` path. A discovery row's ``access_url`` must be an IBE
Level-2 URL on the configured IBE host; its key (the path after ``/ibe/data/spherex/``) is
then read from ``s3_url`` only. A row pointing anywhere else is refused and recorded, never
fetched. File layouts and per-detector constants are cached on disk under ``<cache_dir>``
(``s3-layouts``, ``s3-constants``), shared by every job (``spxflow.ranges``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from spxflow.archive.base import ArchiveError, WindowResult
from spxflow.photometry.cutout import CutoutError

_KEY_RE = re.compile(r"^(qr2|qr3)/level2/[A-Za-z0-9_./+-]+\.fits$")


def key_of_row(row: Mapping, ibe_data_url: str) -> str:
    """S3 key of a discovery row's Level-2 file; ArchiveError (naming the URL) when the
    ``access_url`` is not a Level-2 file under the configured IBE data root."""
    url = str(row.get("access_url", "") or "").split("?")[0]
    root = urlsplit(ibe_data_url)
    parts = urlsplit(url)
    prefix = root.path.rstrip("/") + "/"
    if (parts.scheme, parts.netloc) != (root.scheme, root.netloc) or not parts.path.startswith(
        prefix
    ):
        raise ArchiveError(
            f"refused: access_url {url!r} is not under the configured IBE data root "
            f"{ibe_data_url!r}; it was not fetched"
        )
    key = parts.path[len(prefix) :]
    if ".." in key.split("/") or not _KEY_RE.match(key):
        raise ArchiveError(f"refused: access_url {url!r} is not a SPHEREx Level-2 file key")
    return key


class S3Pixels:
    """Reads windows for the IRSA backend; one pooled client and one set of caches per job."""

    def __init__(
        self,
        s3_url: str,
        ibe_data_url: str,
        *,
        max_concurrency: int,
        timeout_s: float,
        attempts: int,
        backoff_s: float,
        backoff_max_s: float,
        cache_dir: str | None,
    ):
        from spxflow.ranges import ConstantCache, LayoutCache, RangeClient

        self.ibe_data_url = ibe_data_url
        self.max_concurrency = int(max_concurrency)
        self.client = RangeClient(
            s3_url,
            max_concurrency=self.max_concurrency,
            timeout_s=float(timeout_s),
            attempts=int(attempts),
            backoff_s=float(backoff_s),
            backoff_max_s=float(backoff_max_s),
        )
        # Both shared on disk by every job: file layouts per (key, ETag), per-detector constants
        # (PSF planes / EPSF table, WCS-WAVE) per (release, detector, calibration token).
        sub = (lambda name: os.path.join(cache_dir, name)) if cache_dir else (lambda name: None)
        self.layouts = LayoutCache(sub("s3-layouts"))
        self.constants = ConstantCache(sub("s3-constants"))

    def fetch_windows(
        self, rows: Iterable[Mapping], ra: float, dec: float, half_size: int, size_arcsec: float
    ) -> list[WindowResult]:
        rows = list(rows)
        width = max(1, min(self.max_concurrency, len(rows)))
        with ThreadPoolExecutor(max_workers=width) as pool:
            return list(pool.map(lambda row: self._one(row, ra, dec, half_size, size_arcsec), rows))

    def _one(self, row, ra, dec, half_size, size_arcsec) -> WindowResult:
        from spxflow.ranges import read_window

        image_id = str(row.get("obs_publisher_did", "") or row.get("access_url", ""))
        url = str(row.get("access_url", "") or "").split("?")[0]
        result = WindowResult(image_id=image_id, file_name=url.rsplit("/", 1)[-1], status="failed")
        try:
            result.key = key_of_row(row, self.ibe_data_url)
            read = read_window(
                self.client, result.key, ra, dec, half_size, size_arcsec,
                layouts=self.layouts, constants=self.constants,
            )  # fmt: skip
        except (CutoutError, ArchiveError) as exc:
            return result.fail(exc)
        result.status = "ok"
        result.cutout = read.cutout
        result.etag = read.etag
        result.size_bytes = read.bytes
        result.requests = read.requests
        result.attempts = 1
        result.replaced = read.replaced
        return result

    def replaced_objects(self, entries: list[dict]) -> dict[str, str]:
        """``image_id -> recorded ETag`` of windows whose object has a new ETag (one HEAD
        each); an object that is gone counts as replaced, so it is read (and fails) again."""
        recorded = [e for e in entries if e.get("etag") and e.get("key")]

        def current(e):
            try:
                return self.client.head(e["key"])[1]
            except ArchiveError:
                return None

        width = max(1, min(self.max_concurrency, len(recorded)))
        with ThreadPoolExecutor(max_workers=width) as pool:
            etags = list(pool.map(current, recorded))
        return {
            e["image_id"]: e["etag"]
            for e, now in zip(recorded, etags, strict=True)
            if now != e["etag"]
        }
