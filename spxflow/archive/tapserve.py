"""The loopback emulator's ``/TAP/sync``: the ADQL shapes ``spxflow.archive.tap`` sends, answered
from a ``SimulatedArchive``.

Understood (whitespace and keyword case free; anything else is an error VOTable, so a client
change the emulator does not really answer fails loudly instead of returning something)::

    SELECT <alias.column>, ... FROM TAP_UPLOAD.<t> AS c, spherex.plane AS p
    JOIN spherex.artifact AS a ON a.planeid = p.planeid
    JOIN spherex.observation AS o ON o.obsid = p.obsid
    JOIN spherex.obscore AS s ON s.obs_publisher_did = p.obs_publisher_did
         AND s.obs_collection = o.collection
    WHERE 1 = CONTAINS(POINT('ICRS', c.ra, c.dec), p.poly)
       |  1 = INTERSECTS(CIRCLE('ICRS', c.ra, c.dec, <r_deg>), p.poly)
    AND o.collection IN ('<collection>', ...)

with ``UPLOAD=<t>,param:<t>`` (the upload VOTable a multipart part named ``<t>``, columns
``key``, ``ra``, ``dec``). Rows are ``SimulatedArchive.discover_many`` of the uploaded
positions (vectorised) whose ``obs_collection`` is listed, mapped to CAOM/ObsCore columns
(``_COLUMNS``). More rows than ``MAXREC`` (or the emulator's ``tap_max_rows``) answer the first
ones followed by ``<INFO name="QUERY_STATUS" value="OVERFLOW"/>``, as TAP does.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import math
import re
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import pandas as pd

from spxflow.archive.sia import _VOT_DATATYPE, SIA_DTYPES, error_votable_bytes
from spxflow.format import SIA_COLUMN_NAMES

IRSA_PREFIX = "https://irsa.ipac.caltech.edu/"
_VOTABLE_FORMATS = {"votable", "application/x-votable+xml", "text/xml", "votable/td"}
_GEOM = (
    r"1 = CONTAINS\(POINT\('ICRS', c\.ra, c\.dec\), p\.poly\)"
    r"|1 = INTERSECTS\(CIRCLE\('ICRS', c\.ra, c\.dec, (?P<r>[0-9.eE+-]+)\), p\.poly\)"
)
_QUERY_RE = re.compile(
    r"^SELECT (?P<cols>.+?) FROM TAP_UPLOAD\.(?P<upload>\w+) AS c, spherex\.plane AS p "
    r"JOIN spherex\.artifact AS a ON a\.planeid = p\.planeid "
    r"JOIN spherex\.observation AS o ON o\.obsid = p\.obsid "
    r"JOIN spherex\.obscore AS s ON s\.obs_publisher_did = p\.obs_publisher_did "
    r"AND s\.obs_collection = o\.collection "
    rf"WHERE (?P<geom>{_GEOM}) "
    r"AND o\.collection IN \((?P<colls>'[^']*'(?:, '[^']*')*)\)$",
    re.IGNORECASE,
)


def _obscore_kind(name: str) -> str:
    kind = SIA_DTYPES[name]
    return "s" if kind == "s" else _VOT_DATATYPE.get(name, "long") if kind == "i" else "double"


# Selectable columns: alias.column -> (discovery column it comes from, VOTable kind).
_COLUMNS: dict[str, tuple[str, str]] = {
    "c.key": ("key", "long"),
    "o.collection": ("obs_collection", "s"),
    "a.uri": ("access_url", "uri"),
    "p.obs_publisher_did": ("obs_publisher_did", "s"),
    "p.energy_bandpassname": ("energy_bandpassname", "s"),
    "p.energy_bounds_lower": ("em_min", "double"),
    "p.energy_bounds_upper": ("em_max", "double"),
    "p.time_bounds_lower": ("t_min", "double"),
    "p.time_bounds_upper": ("t_max", "double"),
    "p.poly": ("s_region", "polygon"),
    # spherex.obscore has the SIA2 columns (its access_url is DataLink: not served)
    **{
        f"s.{name}": (name, _obscore_kind(name))
        for name in SIA_COLUMN_NAMES
        if name not in ("access_url", "cloud_access")
    },
}


class TapRequestError(ValueError):
    """A request the emulator does not answer; the message goes into the error VOTable."""


def parse_form(content_type: str, body: bytes) -> tuple[list[tuple[str, str]], dict[str, bytes]]:
    """(fields, files) of a POST body: ``multipart/form-data`` (pyvo with an upload) or
    ``application/x-www-form-urlencoded``."""
    from urllib.parse import parse_qsl

    if not content_type.lower().startswith("multipart/"):
        return parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True), {}
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not msg.is_multipart():
        raise TapRequestError("malformed multipart body")
    fields, files = [], {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True) or b""
        if part.get_param("filename", header="content-disposition") is not None:
            files[name] = data
        else:
            fields.append((name, data.decode("utf-8", "replace")))
    return fields, files


def answer(archive, params: dict[str, list[str]], files: dict[str, bytes], max_rows=None):
    """(HTTP status, body, content type) of a ``/TAP/sync`` request."""
    try:
        return 200, _answer(archive, params, files, max_rows), "application/x-votable+xml"
    except TapRequestError as exc:
        return 400, error_votable_bytes(str(exc)), "application/x-votable+xml"


def _one(params, name, default=None):
    values = params.get(name) or []
    if len(values) > 1:
        raise TapRequestError(f"parameter {name} given {len(values)} times")
    return values[0] if values else default


def _answer(archive, params, files, max_rows) -> bytes:
    if str(_one(params, "REQUEST", "")).lower() != "doquery":
        raise TapRequestError("REQUEST must be doQuery")
    if not str(_one(params, "LANG", "")).upper().startswith("ADQL"):
        raise TapRequestError("LANG must be ADQL")
    fmt = _one(params, "RESPONSEFORMAT") or _one(params, "FORMAT") or "votable"
    if fmt.lower() not in _VOTABLE_FORMATS:
        raise TapRequestError(f"FORMAT {fmt!r} is not supported by the emulator")
    try:
        maxrec = _one(params, "MAXREC")
        maxrec = None if maxrec in (None, "") else int(maxrec)
    except ValueError:
        raise TapRequestError(f"MAXREC {params['MAXREC'][0]!r} is not an integer") from None
    query = " ".join(str(_one(params, "QUERY", "")).split())
    m = _QUERY_RE.match(query)
    if not m:
        raise TapRequestError(f"ADQL not understood by the emulator: {query[:200]!r}")
    table_name = m["upload"]
    uploads = dict(u.split(",", 1) for u in str(_one(params, "UPLOAD", "")).split(";") if "," in u)
    if uploads.get(table_name) != f"param:{table_name}" or table_name not in files:
        raise TapRequestError(f"TAP_UPLOAD.{table_name}: no UPLOAD={table_name},param:{table_name}")
    cols = [c.strip() for c in m["cols"].split(",")]
    unknown = [c for c in cols if c.lower() not in _COLUMNS]
    if unknown:
        raise TapRequestError(f"column(s) {unknown} not found")
    key, ra, dec = _positions(files[table_name], table_name)
    radius_arcsec = round(float(m["r"]) * 3600.0, 9) if m["r"] else 0.0
    collections = re.findall(r"'([^']*)'", m["colls"])
    found = archive.discover_many(
        [(str(i), r, d) for i, r, d in zip(range(len(key)), ra, dec, strict=True)], radius_arcsec
    )
    tables = [found[str(i)] for i in range(len(key))]
    if tables:
        rows = pd.concat(tables, ignore_index=True)
        rows["key"] = np.repeat(key, [len(t) for t in tables])
    else:
        rows = pd.DataFrame(columns=[*SIA_COLUMN_NAMES, "key"])
    rows = rows[rows["obs_collection"].isin(collections)]
    rows = rows.iloc[::-1]  # a TAP answer has no order: the client must not rely on one
    limit = min(x for x in (maxrec, max_rows, math.inf) if x is not None)
    status = "OK"
    if len(rows) > limit:
        rows, status = rows.iloc[: int(limit)], "OVERFLOW"
    return _votable(rows, cols, status)


def _positions(data: bytes, name: str):
    from astropy.io.votable import parse

    try:
        table = parse(io.BytesIO(data)).get_first_table().to_table()
    except Exception as exc:  # noqa: BLE001 - any unreadable upload is the client's error
        raise TapRequestError(f"upload {name}: unreadable VOTable: {exc}") from None
    missing = [c for c in ("key", "ra", "dec") if c not in table.colnames]
    if missing:
        raise TapRequestError(f"upload {name} lacks columns {missing}")
    return (
        np.asarray(table["key"]).tolist(),
        np.asarray(table["ra"], dtype=float).tolist(),
        np.asarray(table["dec"], dtype=float).tolist(),
    )


def _cells(values, kind: str) -> list[str]:
    if kind == "s":
        return [escape(str(v)) for v in values]
    if kind == "uri":  # the IBE path relative to the site, as spherex.artifact lists it
        return [escape(str(v).removeprefix(IRSA_PREFIX)) for v in values]
    if kind == "polygon":  # open ra/dec vertex list (DALI polygon) from the closed s_region
        return [" ".join(str(v).split()[2:-2]) for v in values]
    if kind in ("int", "long"):
        return [str(int(v)) for v in values]
    return ["" if v != v else repr(float(v)) for v in values]


def _votable(rows: pd.DataFrame, cols: list[str], status: str) -> bytes:
    fields, columns = [], []
    for c in cols:
        source, kind = _COLUMNS[c.lower()]
        name = c.split(".", 1)[1]
        if kind in ("s", "uri"):
            attrs = 'datatype="char" arraysize="*"'
        elif kind == "polygon":
            attrs = 'datatype="double" arraysize="*" xtype="polygon" unit="deg"'
        else:
            attrs = f'datatype="{kind}"'
        fields.append(f"<FIELD name={quoteattr(name)} {attrs}/>")
        columns.append(_cells(rows[source].tolist() if len(rows) else [], kind))
    body = "\n".join(
        "<TR>" + "".join(f"<TD>{cells[r]}</TD>" for cells in columns) + "</TR>"
        for r in range(len(rows))
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">\n'
        '<RESOURCE type="results">\n<INFO name="QUERY_STATUS" value="OK"/>\n<TABLE>\n'
        + "\n".join(fields)
        + f"\n<DATA><TABLEDATA>\n{body}\n</TABLEDATA></DATA>\n</TABLE>\n"
        + (f'<INFO name="QUERY_STATUS" value="{status}"/>\n' if status != "OK" else "")
        + "</RESOURCE>\n</VOTABLE>\n"
    ).encode("utf-8")
