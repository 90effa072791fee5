"""One row per Level-2 exposure out of a multi-collection, multi-release discovery table.

A discovery table (``spxflow.format.SIA_COLUMN_NAMES``) built from several collections can
list one image more than once (``shared/spherex_format.md`` §8.7, §8.8):

(a) **the same file** returned by more than one collection: wide and deep share the
    ``…/qr3/level2/`` tree, so ``spherex_qr3`` and ``spherex_qr3_deep`` can both return one
    file. Rows with the same ``access_url`` (query string ignored), or the same
    ``obs_publisher_did`` and the same file name, are one file; the row of the first collection
    in ``collection_rank`` order (releases in ``format.RELEASES`` order, wide before deep) is
    kept.
(b) **the same exposure under several processing tokens**: (OBSID, detector) from the file
    name (``format.parse_level2_file_name``) under ``l2b-…`` and ``l2b_retry-…``, or under two
    processing dates. The newest processing by ``format.token_rank`` is kept (a retry breaks a
    tie of dates); equal tokens fall back to rule (a)'s collection order.

Rows whose file name does not parse are kept and never merged by exposure (rule (a) still
applies). Every dropped row is reported with the row that was kept instead.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from spxflow.format import (
    RELEASES,
    parse_level2_file_name,
    release_of_collection,
    release_of_path,
    token_rank,
)

REQUIRED_COLUMNS = ("access_url", "obs_publisher_did", "obs_collection")
DROP_KEYS = (
    "image_id",
    "file_name",
    "obs_collection",
    "release",
    "reason",
    "kept_image_id",
    "kept_file_name",
)


def release_of_row(row: Mapping) -> str:
    """Release ("qr2", "qr3") of a discovery row: from ``obs_collection``, else from the
    ``access_url`` path (``…/spherex/<release>/…``); ValueError names both values."""
    collection = str(row.get("obs_collection", "") or "")
    url = str(row.get("access_url", "") or "")
    try:
        return release_of_collection(collection)
    except ValueError:
        pass
    try:
        return release_of_path(url)
    except ValueError:
        raise ValueError(
            f"discovery row names no known SPHEREx release: obs_collection {collection!r}, "
            f"access_url {url!r}; known releases {sorted(RELEASES)}"
        ) from None


def collection_rank(collection: str) -> tuple:
    """Stable order of collections: releases in ``RELEASES`` order, each release's
    collections in its order (wide before deep); unknown collections last, by name."""
    for i, rel in enumerate(RELEASES.values()):
        if collection in rel.collections:
            return (i, rel.collections.index(collection), "")
    return (len(RELEASES), 0, str(collection))


def url_without_query(url) -> str:
    return str(url or "").strip().split("?", 1)[0]


def file_name_of(url) -> str:
    return url_without_query(url).rstrip("/").rsplit("/", 1)[-1]


def deduplicate(table: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """(kept table, dropped rows): one row per file and per exposure (module docstring).

    The kept table has the input's columns, dtypes and row order (a discovery table is sorted
    by t_min, obs_publisher_did), with a fresh RangeIndex. Each dropped row is a dict with
    ``DROP_KEYS``: image_id (its obs_publisher_did), file_name, obs_collection, release ("" if
    unknown), reason, kept_image_id, kept_file_name; in input row order."""
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"discovery table lacks columns {missing} needed to de-duplicate")
    n = len(table)
    urls = [url_without_query(u) for u in table["access_url"].tolist()]
    dids = [str(d or "") for d in table["obs_publisher_did"].tolist()]
    collections = [str(c or "") for c in table["obs_collection"].tolist()]
    names = [file_name_of(u) for u in urls]
    order = [(collection_rank(collections[i]), i) for i in range(n)]

    # (a) the same file: union of rows sharing a URL, or a publisher DID and a file name.
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_of: dict[tuple, int] = {}
    for i in range(n):
        keys = []
        if urls[i]:
            keys.append(("url", urls[i]))
        if dids[i]:
            keys.append(("did", dids[i], names[i]))
        for key in keys:
            j = first_of.setdefault(key, i)
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)

    kept_by: dict[int, int] = {}  # dropped row -> the row kept instead
    reasons: dict[int, str] = {}
    winners = []  # one per file, in input order (group roots are each group's first row)
    for root in sorted(groups):
        members = groups[root]
        winner = min(members, key=lambda i: order[i])
        winners.append(winner)
        for i in members:
            if i != winner:
                kept_by[i] = winner
                reasons[i] = _same_file_reason(i, winner, names, collections)

    # (b) the same exposure under several processing tokens (rule (a)'s winners only).
    exposures: dict[tuple[str, int], list[tuple[int, str, tuple]]] = {}
    for i in winners:
        try:
            obsid, det, token = parse_level2_file_name(names[i])
            rank = token_rank(token)
        except ValueError:
            continue  # unparseable: kept, never merged by exposure
        exposures.setdefault((obsid, det), []).append((i, token, rank))
    for (obsid, det), rows in exposures.items():
        # newest token; among equal tokens the first collection, then the first row
        # (max returns the first maximal item of the collection-ordered list).
        best, best_token, _ = max(sorted(rows, key=lambda r: order[r[0]]), key=lambda r: r[2])
        for i, token, _rank in rows:
            if i == best:
                continue
            kept_by[i] = best
            if token == best_token:
                reasons[i] = _same_file_reason(i, best, names, collections)
            else:
                reasons[i] = (
                    f"older processing {token} of {obsid}/D{det}; kept {best_token} ({names[best]})"
                )

    # A row dropped by (a) whose file then lost in (b) names both steps and the final survivor.
    dropped = []
    for i in sorted(kept_by):
        k = kept_by[i]
        while k in kept_by:
            reasons[i] = f"{reasons[i]}; {reasons[k]}"
            k = kept_by[k]
        row = {"obs_collection": collections[i], "access_url": urls[i]}
        try:
            release = release_of_row(row)
        except ValueError:
            release = ""
        dropped.append(
            {
                "image_id": dids[i],
                "file_name": names[i],
                "obs_collection": collections[i],
                "release": release,
                "reason": reasons[i],
                "kept_image_id": dids[k],
                "kept_file_name": names[k],
            }
        )
    keep = [i not in kept_by for i in range(n)]
    kept = table.loc[keep].reset_index(drop=True) if n else table.reset_index(drop=True)
    return kept, dropped


def _same_file_reason(i: int, k: int, names, collections) -> str:
    if collections[i] != collections[k]:
        return f"same file {names[i]} also returned by {collections[k] or '(no collection)'}"
    return f"duplicate row of {names[i]} in {collections[i] or '(no collection)'}"
