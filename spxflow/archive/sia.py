"""SIA2 discovery with pyvo, TIME paging past MAXREC, and normalisation to the discovery table.

The discovery table is exactly what ``SimulatedArchive.discover`` returns: the §3.1 columns of
``spxflow.format.SIA_COLUMN_NAMES`` in order, with fixed dtypes (``SIA_DTYPES``), sorted by
(t_min, obs_publisher_did). ``votable_bytes`` / ``error_votable_bytes`` write the same columns
as an IRSA-layout VOTable (used by the loopback emulator; FIELD ids are generic ``col_N`` as
IRSA's are, so readers must use FIELD ``name``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import pandas as pd

from spxflow.archive.base import ArchiveError, normalise_discovery
from spxflow.format import SIA_COLUMN_NAMES, SIA_COLUMNS

# Column kinds: "f" float64 (null -> NaN), "i" int64, "s" str (null -> "").
_INT_COLUMNS = {
    "calib_level",
    "access_estsize",
    "target_standard",
    "target_moving",
    "s_xel1",
    "s_xel2",
    "position_timedependent",
    "upload_row_id",
}
_FLOAT_COLUMNS = {
    "s_ra",
    "s_dec",
    "s_resolution",
    "em_min",
    "em_max",
    "em_res_power",
    "t_exptime",
    "environment_photometric",
    "s_pixel_scale",
    "t_min",
    "t_max",
    "t_resolution",
    "t_xel",
    "s_fov",
    "em_xel",
    "pol_xel",
}
SIA_DTYPES: dict[str, str] = {
    name: ("i" if name in _INT_COLUMNS else "f" if name in _FLOAT_COLUMNS else "s")
    for name in SIA_COLUMN_NAMES
}
# VOTable datatypes as IRSA declares them (xel counts are long and usually null there; we
# keep them float64 in the table so that null is NaN, as the simulated backend does).
_VOT_DATATYPE = {
    "calib_level": "int",
    "access_estsize": "long",
    "target_standard": "int",
    "target_moving": "int",
    "s_xel1": "long",
    "s_xel2": "long",
    "position_timedependent": "int",
    "upload_row_id": "long",
    "t_xel": "long",
    "em_xel": "long",
    "pol_xel": "long",
}
_UCD = {
    "s_ra": "pos.eq.ra",
    "s_dec": "pos.eq.dec",
    "t_min": "time.start;obs.exposure",
    "t_max": "time.end;obs.exposure",
    "em_min": "em.wl;stat.min",
    "em_max": "em.wl;stat.max",
    "access_url": "meta.ref.url",
    "obs_publisher_did": "meta.ref.ivoid",
}
# TIME paging range: before the earliest SPHEREx data (science operations from 2025-05-01 =
# MJD 60796) to well after the mission (2034); empty pages cost one query each.
MISSION_START_MJD = 60700.0
MISSION_END_MJD = 64000.0
MIN_TIME_PAGE_DAYS = 1.0 / 86400.0


def normalise_sia_table(table) -> pd.DataFrame:
    """An astropy Table / pyvo result / DataFrame of SIA2 rows -> the discovery table.

    Extra columns are dropped, missing ones raise ``ArchiveError`` naming them, masked or null
    values become NaN (numbers) or "" (strings), bytes are decoded.
    """
    if hasattr(table, "to_table"):
        table = table.to_table()
    if isinstance(table, pd.DataFrame):
        names = list(table.columns)
        n = len(table)

        def get(name):
            return table[name].to_numpy(dtype=object)
    else:
        names = list(table.colnames)
        n = len(table)

        def get(name):
            return table[name]

    missing = [c for c in SIA_COLUMN_NAMES if c not in names]
    if missing:
        raise ArchiveError(f"SIA2 response lacks columns {missing}")
    cols = {}
    for name in SIA_COLUMN_NAMES:
        cols[name] = _column(get(name), SIA_DTYPES[name], name, n)
    return coerce_sia_dtypes(pd.DataFrame(cols, index=pd.RangeIndex(n)))


def coerce_sia_dtypes(df: pd.DataFrame) -> pd.DataFrame:
    """``normalise_discovery`` plus the simulated backend's dtypes (float64, int64, str)."""
    return cast_sia_dtypes(normalise_discovery(df))


def cast_sia_dtypes(df: pd.DataFrame) -> pd.DataFrame:
    """The §3.1 columns of ``df`` with the simulated backend's dtypes, rows left in order."""
    out = {}
    for name in SIA_COLUMN_NAMES:
        kind = SIA_DTYPES[name]
        if kind == "s":
            out[name] = pd.Series(df[name].tolist(), dtype="str", index=df.index)
        elif kind == "i":
            out[name] = df[name].astype("int64")
        else:
            out[name] = df[name].astype("float64")
    return pd.DataFrame(out, index=df.index)


def _column(col, kind: str, name: str, n: int):
    mask = np.zeros(n, dtype=bool)
    if isinstance(col, np.ma.MaskedArray):
        mask = np.ma.getmaskarray(col).reshape(n, -1).any(axis=1) if n else mask
        col = np.ma.getdata(col)
    values = np.empty(n, dtype=object)
    values[:] = list(col)
    if kind == "s":
        out = []
        for v, m in zip(values, mask, strict=True):
            if m or v is None or (isinstance(v, float) and math.isnan(v)):
                out.append("")
            elif isinstance(v, bytes):
                out.append(v.decode("utf-8"))
            else:
                out.append(str(v))
        return out
    nums = np.empty(n, dtype=float)
    for i, (v, m) in enumerate(zip(values, mask, strict=True)):
        if m or v is None or (isinstance(v, (str, bytes)) and not str(v).strip()):
            nums[i] = np.nan
        else:
            try:
                nums[i] = float(v)
            except (TypeError, ValueError):
                raise ArchiveError(f"SIA2 column {name}: non-numeric value {v!r}") from None
    if kind == "i":
        if np.isnan(nums).any():
            raise ArchiveError(f"SIA2 column {name}: null values in an integer column")
        return nums.astype(np.int64)
    return nums


# ------------------------------------------------------------------------------ querying


class SiaClient:
    """pyvo ``SIA2Service`` discovery over several collections (one query set per collection,
    QR2 and QR3 alike), paging by TIME past MAXREC.

    ``session`` is a ``requests.Session`` (pyvo uses it for every request); ``before_request``
    is an optional context-manager factory (the per-host concurrency slot) entered around each
    query.
    """

    def __init__(
        self,
        sia_url: str,
        collections: Sequence[str],
        *,
        maxrec: int = 10000,
        session=None,
        slot: Callable | None = None,
        retry: Callable | None = None,
    ):
        from pyvo.dal.sia2 import SIA2Service

        self.sia_url = sia_url
        self.collections = list(collections)
        self.maxrec = int(maxrec)
        self.slot = slot
        self.retry = retry
        # check_baseurl=False: the URL is the query endpoint (no VOSI capabilities round trip).
        self.service = SIA2Service(sia_url, session=session, check_baseurl=False)
        self.n_queries = 0

    def discover(self, ra: float, dec: float, radius_arcsec: float) -> pd.DataFrame:
        """Rows of every collection (each keeps its ``obs_collection``; a row without one gets
        the collection it was queried from). Only identical rows of one collection (TIME pages
        overlap at their edges) are merged here: the same file under two collections (wide and
        deep) or two processings of one exposure are ``spxflow.discovery.deduplicate``'s job."""
        frames = []
        for collection in self.collections:
            for part in self._collection_rows(collection, ra, dec, radius_arcsec):
                frame = normalise_sia_table(part)
                frame.loc[frame["obs_collection"] == "", "obs_collection"] = collection
                frames.append(frame)
        if not frames:
            return normalise_sia_table(_empty_frame())
        df = pd.concat(frames, ignore_index=True)
        df = df.drop_duplicates(
            subset=["obs_collection", "obs_publisher_did", "access_url"], keep="first"
        )
        return coerce_sia_dtypes(df)

    def _collection_rows(self, collection, ra, dec, radius_arcsec):
        radius_deg = max(float(radius_arcsec), 1e-3) / 3600.0  # pyvo rejects a zero radius
        pos = (float(ra) % 360.0, float(dec), radius_deg)
        rows, overflow = self._query(collection, pos, None)
        if not overflow:
            return [rows]
        # Deep fields: more rows than MAXREC. Page by TIME, halving pages that still overflow.
        pages = []
        stack = [(MISSION_START_MJD, max(MISSION_END_MJD, _now_mjd() + 2.0))]
        while stack:
            lo, hi = stack.pop()
            rows, overflow = self._query(collection, pos, (lo, hi))
            if not overflow:
                pages.append(rows)
                continue
            if hi - lo <= MIN_TIME_PAGE_DAYS:
                raise ArchiveError(
                    f"SIA2 {collection}: more than MAXREC={self.maxrec} rows within one "
                    f"second at TIME {lo} {hi}; raise archive.irsa.maxrec"
                )
            mid = 0.5 * (lo + hi)
            stack.extend([(mid, hi), (lo, mid)])
        return pages

    def _query(self, collection, pos, time_mjd):
        def run():
            return self._query_once(collection, pos, time_mjd)

        return self.retry(run) if self.retry else run()

    def _query_once(self, collection, pos, time_mjd):
        from astropy.time import Time
        from pyvo.dal.exceptions import (
            DALFormatError,
            DALOverflowWarning,
            DALQueryError,
            DALServiceError,
        )

        kwargs = {"collection": collection, "maxrec": self.maxrec}
        if time_mjd is not None:
            kwargs["time"] = (Time(time_mjd[0], format="mjd"), Time(time_mjd[1], format="mjd"))
        where = f"SIA2 {self.sia_url} COLLECTION={collection} POS=CIRCLE {pos[0]} {pos[1]} {pos[2]}"
        if time_mjd is not None:
            where += f" TIME={time_mjd[0]} {time_mjd[1]}"
        self.n_queries += 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DALOverflowWarning)
                if self.slot is not None:
                    with self.slot(self.sia_url):
                        res = self.service.search(pos=pos, **kwargs)
                else:
                    res = self.service.search(pos=pos, **kwargs)
        except DALQueryError as exc:
            # HTTP 200 with <INFO name="QUERY_STATUS" value="ERROR">: the service's message.
            raise ArchiveError(f"{where}: query error: {exc.reason or exc}") from None
        except DALFormatError as exc:
            raise SiaTransientError(f"{where}: unreadable response: {exc}") from None
        except DALServiceError as exc:
            code = getattr(exc, "code", None)
            raise SiaTransientError(f"{where}: service error (HTTP {code}): {exc}", code) from None
        status = str(res.status[0]).upper() if res.status else "OK"
        table = res.to_table()
        overflow = status == "OVERFLOW" or len(table) >= self.maxrec
        return table, overflow


class SiaTransientError(ArchiveError):
    """A SIA2 request failed in a way a retry may fix (HTTP 5xx/429, connection, bad body)."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


def _now_mjd() -> float:
    import time

    return time.time() / 86400.0 + 40587.0


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame({name: [] for name in SIA_COLUMN_NAMES})


# ------------------------------------------------------------------------------ writing


def _fmt(value, kind: str) -> str:
    if kind == "s":
        return "" if value is None else str(value)
    if value is None:
        return ""
    f = float(value)
    if math.isnan(f):
        return ""
    if kind == "i":
        return str(int(f))
    return repr(f)


def votable_bytes(
    df: pd.DataFrame, *, status: str = "OK", status_text: str = "", infos: dict | None = None
) -> bytes:
    """An IRSA-layout SIA2 VOTable (TABLEDATA) of discovery rows, §3.1 columns in order."""
    fields = []
    for i, (name, unit) in enumerate(SIA_COLUMNS, start=1):
        kind = SIA_DTYPES[name]
        attrs = f'ID="col_{i}" name={quoteattr(name)}'
        if kind == "s":
            attrs += ' datatype="char" arraysize="*"'
        else:
            attrs += f' datatype="{_VOT_DATATYPE.get(name, "double")}"'
        if unit:
            attrs += f" unit={quoteattr(unit)}"
        if name in _UCD:
            attrs += f" ucd={quoteattr(_UCD[name])}"
        null = ""
        if _VOT_DATATYPE.get(name) in ("int", "long"):
            null = '<VALUES null="-2147483648"/>' if _VOT_DATATYPE[name] == "int" else ""
            if _VOT_DATATYPE[name] == "long":
                null = '<VALUES null="-9223372036854775808"/>'
        fields.append(f"<FIELD {attrs}>{null}</FIELD>" if null else f"<FIELD {attrs}/>")
    kinds = [SIA_DTYPES[n] for n in SIA_COLUMN_NAMES]
    columns = [df[n].tolist() for n in SIA_COLUMN_NAMES] if len(df) else []
    rows = []
    for r in range(len(df)):
        cells = "".join(
            f"<TD>{escape(_fmt(columns[c][r], kinds[c]))}</TD>" for c in range(len(kinds))
        )
        rows.append(f"<TR>{cells}</TR>")
    extra = "".join(
        f"<INFO name={quoteattr(k)} value={quoteattr(str(v))}/>" for k, v in (infos or {}).items()
    )
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">\n'
        '<RESOURCE type="results">\n'
        f'<INFO name="QUERY_STATUS" value={quoteattr(status)}>{escape(status_text)}</INFO>\n'
        f"{extra}\n<TABLE>\n"
        + "\n".join(fields)
        + "\n<DATA><TABLEDATA>\n"
        + "\n".join(rows)
        + "\n</TABLEDATA></DATA>\n</TABLE>\n</RESOURCE>\n</VOTABLE>\n"
    )
    return text.encode("utf-8")


def error_votable_bytes(message: str) -> bytes:
    """IRSA's error document (served with HTTP 200): QUERY_STATUS=ERROR and the message."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">\n'
        '<RESOURCE type="results">\n'
        f'<INFO name="QUERY_STATUS" value="ERROR">{escape(message)}</INFO>\n'
        "</RESOURCE>\n</VOTABLE>\n"
    ).encode()


def error_votable_message(data: bytes) -> str | None:
    """The QUERY_STATUS=ERROR message of a VOTable body, or None if it is not one."""
    head = data[:4096].lstrip()
    if not (head.startswith(b"<?xml") or head.startswith(b"<VOTABLE")):
        return None
    import re

    m = re.search(rb'<INFO[^>]*name="QUERY_STATUS"[^>]*value="ERROR"[^>]*>(.*?)</INFO>', data, re.S)
    if not m:
        return "non-FITS XML document"
    return m.group(1).decode("utf-8", "replace").strip()
