"""Catalog-scale discovery through IRSA TAP: many positions per query, uploaded as a table.

Per-position SIA2 costs 2.6–7.5 s a position at IRSA (days for 10,000 sources); TAP takes an
uploaded table of positions (``UPLOAD=cat,param:cat``) and answers all of them in one query
(``shared/spherex_format.md`` §3.2, §8.7). The query (``discovery_adql``) joins

- ``spherex.plane p`` (footprint ``p.poly``, DID, bandpass, energy and time bounds),
- ``spherex.artifact a ON a.planeid = p.planeid`` (``a.uri``: the IBE path of the file),
- ``spherex.observation o ON o.obsid = p.obsid`` (``o.collection``: the only column that
  tells wide from deep; the path ``/spherex/qr3/`` is shared by both),
- ``spherex.obscore s`` on (DID, collection): the ObsCore/SIA2 values CAOM's plane does not
  carry (``s_ra``/``s_dec`` image centre, ``t_exptime``, ``target_name``,
  ``obs_release_date``, ``access_estsize``); its ``access_url`` is a DataLink document, so
  the file URL comes from ``a.uri``.

and matches positions with ``1 = CONTAINS(POINT('ICRS', c.ra, c.dec), p.poly)`` (radius 0, the
workflow default) or ``1 = INTERSECTS(CIRCLE('ICRS', c.ra, c.dec, r), p.poly)`` (radius > 0:
every footprint within r of the position, what SIA2's ``POS=CIRCLE`` gives). ``CONTAINS`` on
``o.s_region`` fails inside a join at IRSA, hence ``p.poly``.

Each row comes back with the uploaded row ``key`` (the position's index in its chunk) and is
normalised to exactly the table ``SiaClient.discover`` gives for that position
(``tap_rows_to_discovery``): columns TAP lacks are derived as documented there.

Chunks of ``upload_rows`` positions are queried at most ``max_concurrent`` at a time; an answer
that reaches ``MAXREC`` (``QUERY_STATUS=OVERFLOW``) is split in halves and queried again, so no
row is lost silently. Transient failures (429, 5xx incl. IRSA's intermittent sync 504s,
resets, timeouts, truncated bodies) are retried by the caller's policy; a TAP error document
(``QUERY_STATUS=ERROR`` with HTTP 200 or 400) is an ``ArchiveError`` naming the problem.
"""

from __future__ import annotations

import io
import logging
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import requests
import urllib3.exceptions

from spxflow.archive.base import ArchiveError
from spxflow.archive.http import RETRY_STATUS, parse_retry_after
from spxflow.archive.sia import cast_sia_dtypes, error_votable_message
from spxflow.format import BANDS, SIA_COLUMN_NAMES, parse_level2_file_name

log = logging.getLogger(__name__)

UPLOAD_NAME = "cat"
# Selected columns: (ADQL expression, result column name).
TAP_COLUMNS: tuple[tuple[str, str], ...] = (
    ("c.key", "key"),
    ("o.collection", "collection"),
    ("a.uri", "uri"),
    ("p.obs_publisher_did", "obs_publisher_did"),
    ("p.energy_bandpassname", "energy_bandpassname"),
    ("p.energy_bounds_lower", "energy_bounds_lower"),
    ("p.energy_bounds_upper", "energy_bounds_upper"),
    ("p.time_bounds_lower", "time_bounds_lower"),
    ("p.time_bounds_upper", "time_bounds_upper"),
    ("p.poly", "poly"),
    ("s.s_ra", "s_ra"),
    ("s.s_dec", "s_dec"),
    ("s.t_exptime", "t_exptime"),
    ("s.target_name", "target_name"),
    ("s.obs_release_date", "obs_release_date"),
    ("s.access_estsize", "access_estsize"),
)
# SIA2 columns that are the same for every SPHEREx Level-2 row (§3.1 example response); TAP
# is not asked for them.
SIA_CONSTANTS: dict[str, object] = {
    "facility_name": "SPHEREx",
    "instrument_name": "SPHEREx",
    "dataproduct_subtype": "science",
    "calib_level": 2,
    "dataproduct_type": "image",
    "energy_emband": "Infrared",
    "s_resolution": 3.075,
    "proposal_title": "SPHEREx LVF Survey Data",
    "access_format": "image/fits",
    "obs_intent": "science",
    "algorithm_name": "exposure",
    "facility_keywords": "",
    "instrument_keywords": "",
    "environment_photometric": np.nan,
    "proposal_id": "",
    "proposal_pi": "",
    "proposal_project": "SPHEREx",
    "target_type": "field",
    "target_standard": 0,
    "target_moving": 0,
    "target_keywords": "",
    "s_xel1": 2040,
    "s_xel2": 2040,
    "s_pixel_scale": 6.15,
    "position_timedependent": 0,
    "t_resolution": np.nan,
    "t_xel": np.nan,
    "s_fov": 3.485,
    "em_xel": np.nan,
    "pol_states": "",
    "pol_xel": np.nan,
    "o_ucd": "",
    "upload_row_id": 1,  # SIA2 numbers its single POS 1
}
_IBE_MARK = "ibe/data/spherex/"


def discovery_adql(collections: Sequence[str], radius_arcsec: float) -> str:
    """The ADQL of one chunk (positions in ``TAP_UPLOAD.cat``: key, ra, dec)."""
    if float(radius_arcsec) > 0:
        geom = (
            f"1 = INTERSECTS(CIRCLE('ICRS', c.ra, c.dec, {float(radius_arcsec) / 3600.0!r}), "
            "p.poly)"
        )
    else:
        geom = "1 = CONTAINS(POINT('ICRS', c.ra, c.dec), p.poly)"
    names = ", ".join("'" + str(c).replace("'", "''") + "'" for c in collections)
    select = ", ".join(expr for expr, _ in TAP_COLUMNS)
    return (
        f"SELECT {select}\n"
        f"FROM TAP_UPLOAD.{UPLOAD_NAME} AS c, spherex.plane AS p\n"
        "JOIN spherex.artifact AS a ON a.planeid = p.planeid\n"
        "JOIN spherex.observation AS o ON o.obsid = p.obsid\n"
        "JOIN spherex.obscore AS s ON s.obs_publisher_did = p.obs_publisher_did "
        "AND s.obs_collection = o.collection\n"
        f"WHERE {geom}\n"
        f"AND o.collection IN ({names})"
    )


# ------------------------------------------------------------------------------ normalising


def tap_rows_to_discovery(
    rows: pd.DataFrame, ibe_root: str, collections: Sequence[str]
) -> pd.DataFrame:
    """Clean TAP rows (``tap_frame``) -> ``key`` + the discovery table's columns (its dtypes),
    sorted by key and, within a key, in ``SiaClient.discover`` order.

    Derived columns: ``access_url`` = ``ibe_root`` + the ``a.uri`` path after
    ``ibe/data/spherex/`` (the real IBE URL, as SIA2 gives it; ``base_url_override`` is applied
    only when a file is fetched); ``cloud_access`` = the SIA2 JSON with the S3 key = that same
    path (§3.1, §8.7: TAP has no cloud column); ``obs_id`` from the file name (``p.obsid`` is
    a UUID), else from the DID; ``em_min``/``em_max`` = the plane's energy bounds;
    ``em_res_power`` = the detector's (§3.1 table, the same for every file of a detector);
    ``s_region`` = ``POLYGON ICRS`` + the ``p.poly`` vertices, closed by repeating the first
    (as SIA2 writes it); ``t_min``/``t_max`` = the plane's time bounds; ``obs_collection`` =
    ``o.collection``; the constant columns are ``SIA_CONSTANTS``.
    """
    n = len(rows)
    uri = rows["uri"].tolist()
    keys3 = [u.split(_IBE_MARK, 1)[1] if _IBE_MARK in u else u.lstrip("/") for u in uri]
    dids = rows["obs_publisher_did"].tolist()
    bandpass = rows["energy_bandpassname"].tolist()
    cols: dict[str, object] = {
        "s_ra": rows["s_ra"].to_numpy(dtype=float),
        "s_dec": rows["s_dec"].to_numpy(dtype=float),
        "energy_bandpassname": bandpass,
        "obs_id": [_obs_id(k, d) for k, d in zip(keys3, dids, strict=True)],
        "em_min": rows["energy_bounds_lower"].to_numpy(dtype=float),
        "em_max": rows["energy_bounds_upper"].to_numpy(dtype=float),
        "em_res_power": [BANDS.get(_detector(b), (0, 0, np.nan))[2] for b in bandpass],
        "access_url": [f"{ibe_root.rstrip('/')}/{k}" for k in keys3],
        "access_estsize": rows["access_estsize"].to_numpy(dtype=np.int64),
        "t_exptime": rows["t_exptime"].to_numpy(dtype=float),
        "s_region": [_s_region(p) for p in rows["poly"].tolist()],
        "obs_collection": rows["collection"].tolist(),
        "target_name": rows["target_name"].tolist(),
        "obs_release_date": rows["obs_release_date"].tolist(),
        "t_min": rows["time_bounds_lower"].to_numpy(dtype=float),
        "t_max": rows["time_bounds_upper"].to_numpy(dtype=float),
        "obs_publisher_did": dids,
        "cloud_access": [
            '{"aws": {"bucket_name": "nasa-irsa-spherex", '
            f'"key": "{k}", "region": "us-east-1"}}}}'
            for k in keys3
        ],
    }
    frame = pd.DataFrame(
        {name: cols[name] if name in cols else SIA_CONSTANTS[name] for name in SIA_COLUMN_NAMES},
        index=pd.RangeIndex(n),
    )
    # SiaClient.discover concatenates the collections in configured order, merges identical
    # rows of one collection, then sorts stably by (t_min, DID): the same file under wide and
    # deep keeps the collection order. Per key, that is this sort.
    rank = {c: i for i, c in enumerate(collections)}
    frame["_rank"] = [rank.get(c, len(rank)) for c in frame["obs_collection"]]
    frame["key"] = rows["key"].to_numpy(dtype=np.int64)
    frame = frame.sort_values(["key", "t_min", "obs_publisher_did", "_rank"], kind="mergesort")
    frame = frame.drop_duplicates(
        subset=["key", "obs_collection", "obs_publisher_did", "access_url"], keep="first"
    ).reset_index(drop=True)
    out = cast_sia_dtypes(frame)
    out.insert(0, "key", frame["key"].to_numpy())
    return out


def tap_frame(table) -> pd.DataFrame:
    """The ``TAP_COLUMNS`` of an astropy Table (a TAP answer) as clean values: masked or null
    numbers NaN (a null integer is refused), masked strings "", bytes decoded; ``poly`` as
    given. Vectorised: an answer has ~100 k rows."""
    missing = [name for _, name in TAP_COLUMNS if name not in table.colnames]
    if missing:
        raise ArchiveError(f"TAP answer lacks columns {missing}")
    out = {}
    for _, name in TAP_COLUMNS:
        col = table[name]
        data = np.ma.getdata(col)
        mask = np.ma.getmaskarray(col) if np.ma.isMaskedArray(col) else None
        kind = _TAP_KINDS.get(name, "s")
        if name == "poly":
            out[name] = list(data)
        elif kind == "s":
            values = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in data]
            if mask is not None and mask.any():
                values = ["" if m else v for v, m in zip(values, mask, strict=True)]
            out[name] = values
        else:
            try:
                values = np.asarray(data, dtype=float)
            except (TypeError, ValueError):
                raise ArchiveError(f"TAP column {name}: non-numeric values") from None
            if mask is not None:
                values = np.where(mask.reshape(len(values), -1).any(axis=1), np.nan, values)
            if kind == "i":
                if np.isnan(values).any():
                    raise ArchiveError(f"TAP column {name}: null values in an integer column")
                values = values.astype(np.int64)
            out[name] = values
    return pd.DataFrame(out, index=pd.RangeIndex(len(table)))


_TAP_KINDS = {
    "key": "i",
    "access_estsize": "i",
    **{
        name: "f"
        for name in (
            "energy_bounds_lower",
            "energy_bounds_upper",
            "time_bounds_lower",
            "time_bounds_upper",
            "s_ra",
            "s_dec",
            "t_exptime",
        )
    },
}


def _detector(bandpass: str) -> int:
    tail = bandpass.rsplit("D", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _obs_id(key: str, did: str) -> str:
    try:
        return parse_level2_file_name(key.rsplit("/", 1)[-1])[0]
    except ValueError:  # not a Level-2 name: the DID's "?<obsid>/D<det>"
        return did.split("?", 1)[-1].split("/D", 1)[0]


def _s_region(poly) -> str:
    """``POLYGON ICRS ra1 dec1 … ra1 dec1`` from ``p.poly``: a DALI polygon (array of
    ra, dec pairs) or an STC-S/ADQL string, closed by repeating the first vertex."""
    if isinstance(poly, (str, bytes)):
        text = poly.decode() if isinstance(poly, bytes) else poly
        parts = text.replace("(", " ").replace(")", " ").replace(",", " ").split()
        nums = []
        for p in parts:
            try:
                nums.append(float(p))
            except ValueError:
                continue
    else:
        nums = [float(v) for v in np.ma.getdata(poly).ravel()]
    if len(nums) < 6 or len(nums) % 2:
        raise ArchiveError(f"TAP p.poly is not a polygon: {poly!r}")
    if nums[:2] != nums[-2:]:
        nums = nums + nums[:2]
    return "POLYGON ICRS " + " ".join(f"{v:.7f}" for v in nums)


# ------------------------------------------------------------------------------ querying


class TapError(ArchiveError):
    """A TAP request failed; ``transient``: another attempt may succeed (RetryPolicy)."""

    def __init__(self, message: str, *, transient: bool, retry_after: float | None = None):
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after


class TapClient:
    """Discovery of many positions through ``<tap_url>/sync`` with uploaded positions.

    ``session``: the ``requests.Session`` pyvo sends with; ``slot``: the per-host slot
    context-manager factory (``HostSlots``) entered around each request; ``retry``: wraps one
    request (``RetryPolicy.run``); ``ibe_root``: the real IBE data root the ``access_url``
    values are built under.
    """

    def __init__(
        self,
        tap_url: str,
        collections: Sequence[str],
        ibe_root: str,
        *,
        upload_rows: int = 500,
        maxrec: int = 250000,
        max_concurrent: int = 1,
        session=None,
        slot: Callable | None = None,
        retry: Callable | None = None,
    ):
        if int(upload_rows) < 1 or int(maxrec) < 1:
            raise ValueError("TAP upload_rows and maxrec must be >= 1")
        self.tap_url = tap_url.rstrip("/")
        self.collections = list(collections)
        self.ibe_root = ibe_root
        self.upload_rows = int(upload_rows)
        self.maxrec = int(maxrec)
        self.max_concurrent = max(1, int(max_concurrent))
        self.session = session if session is not None else requests.Session()
        self.slot = slot
        self.retry = retry
        self.n_queries = 0  # requests sent (retries and overflow halves included)
        self._lock = threading.Lock()

    def discover_many(
        self, positions: Sequence[tuple[str, float, float]], radius_arcsec: float = 0.0
    ) -> dict[str, pd.DataFrame]:
        """``{key: discovery table}`` for (key, ra, dec) positions, equal to
        ``SiaClient.discover`` per position."""
        positions = [(str(k), float(ra) % 360.0, float(dec)) for k, ra, dec in positions]
        chunks = [
            positions[i : i + self.upload_rows] for i in range(0, len(positions), self.upload_rows)
        ]
        width = max(1, min(self.max_concurrent, len(chunks)))
        with ThreadPoolExecutor(max_workers=width) as pool:
            parts = list(pool.map(lambda c: self._chunk(c, radius_arcsec), chunks))
        out: dict[str, pd.DataFrame] = {}
        for part in parts:
            out.update(part)
        return out

    def _chunk(self, positions, radius_arcsec) -> dict[str, pd.DataFrame]:
        """One chunk, split in halves while its answer overflows MAXREC."""
        table, overflow = self._query(positions, radius_arcsec)
        if overflow:
            if len(positions) == 1:
                raise ArchiveError(
                    f"TAP {self.tap_url}: more than MAXREC={self.maxrec} rows for the single "
                    f"position {positions[0]}; raise archive.irsa.tap_maxrec"
                )
            half = len(positions) // 2
            log.info("TAP answer of %d positions overflowed; splitting", len(positions))
            out = self._chunk(positions[:half], radius_arcsec)
            out.update(self._chunk(positions[half:], radius_arcsec))
            return out
        bounds = np.searchsorted(table["key"].to_numpy(), np.arange(len(positions) + 1))
        body = table.drop(columns="key")
        # Each key's rows are already what normalise_discovery gives (columns, dtypes, order;
        # tests/test_tap.py checks it); calling it per position would cost ~7 ms each.
        return {
            p[0]: body.iloc[bounds[i] : bounds[i + 1]].reset_index(drop=True)
            for i, p in enumerate(positions)
        }

    def _query(self, positions, radius_arcsec) -> tuple[pd.DataFrame, bool]:
        def run():
            return self._query_once(positions, radius_arcsec)

        return self.retry(run) if self.retry else run()

    def _query_once(self, positions, radius_arcsec) -> tuple[pd.DataFrame, bool]:
        from astropy.io.votable import parse as parse_votable
        from astropy.table import Table
        from pyvo.dal.exceptions import DALFormatError, DALQueryError
        from pyvo.dal.tap import TAPQuery, TAPResults

        upload = Table(
            {
                "key": np.arange(len(positions), dtype=np.int64),
                "ra": np.array([p[1] for p in positions], dtype=float),
                "dec": np.array([p[2] for p in positions], dtype=float),
            }
        )
        query = TAPQuery(
            self.tap_url,
            discovery_adql(self.collections, radius_arcsec),
            maxrec=self.maxrec,
            uploads={UPLOAD_NAME: upload},
            session=self.session,
        )
        where = f"TAP {query.queryurl} ({len(positions)} positions)"
        with self._lock:
            self.n_queries += 1
        try:
            if self.slot is not None:
                with self.slot(self.tap_url):
                    data, code, headers = _post(query)
            else:
                data, code, headers = _post(query)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise TapError(f"{where}: {type(exc).__name__}: {exc}", transient=True) from None
        if code in RETRY_STATUS:
            raise TapError(
                f"{where}: HTTP {code}",
                transient=True,
                retry_after=parse_retry_after(headers.get("Retry-After")),
            )
        if code != 200:
            msg = error_votable_message(data)
            if msg and msg != "non-FITS XML document":
                raise TapError(f"{where}: query error (HTTP {code}): {msg}", transient=False)
            text = data[:300].decode("utf-8", "replace").strip()
            raise TapError(f"{where}: HTTP {code}: {text}", transient=False)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # overflow is handled below; W-warnings noise
                res = TAPResults(parse_votable(io.BytesIO(data)), url=query.queryurl)
        except DALQueryError as exc:
            raise TapError(f"{where}: query error: {exc.reason or exc}", transient=False) from None
        except (DALFormatError, ValueError, IndexError, KeyError) as exc:
            # a truncated or garbled body: the same request may well succeed
            raise TapError(f"{where}: unreadable answer: {exc}", transient=True) from None
        status = str(res.query_status or "OK").upper()
        try:
            rows = tap_frame(res.to_table())
        except ArchiveError as exc:
            raise TapError(f"{where}: {exc}", transient=False) from None
        overflow = status == "OVERFLOW" or len(rows) >= self.maxrec
        # Only Level-2 science files (a plane could list other artifacts, e.g. a preview).
        rows = rows[[("/level2/" in u and u.endswith(".fits")) for u in rows["uri"]]]
        return tap_rows_to_discovery(rows, self.ibe_root, self.collections), overflow


def _post(query) -> tuple[bytes, int, dict]:
    """Send ``query`` (pyvo's multipart POST with the upload) and read the whole body; a body
    shorter than its Content-Length raises (urllib3 enforces it)."""
    response = query.submit()
    try:
        return response.raw.read(), response.status_code, dict(response.headers)
    finally:
        response.close()
