"""Reading and validating the user's catalog.

Every problem is reported with the catalog row (1-based data row, as a spreadsheet shows it
after the header) and the offending value, and all problems are collected before failing so a
user fixes the file in one pass.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import astropy.units as u
import numpy as np
import pandas as pd
from astropy.coordinates import SkyCoord, search_around_sky

from spxflow.config import completed_config
from spxflow.slug import safe_slug

log = logging.getLogger(__name__)


class CatalogError(ValueError):
    """The catalog cannot be used; the message lists every problem with its row."""


@dataclass(frozen=True)
class CatalogSettings:
    columns: dict
    default_size_arcsec: float
    min_size_arcsec: float
    max_size_arcsec: float
    near_duplicate_arcsec: float
    neighbour_radius_arcsec: float

    @classmethod
    def from_config(cls, config: dict) -> CatalogSettings:
        """From a workflow config; missing keys take the schema's defaults."""
        config = completed_config(config)
        cat = config["catalog_options"]
        return cls(
            columns=dict(cat["columns"]),
            default_size_arcsec=float(config["cutout_size_arcsec"]),
            min_size_arcsec=float(cat["min_cutout_size_arcsec"]),
            max_size_arcsec=float(cat["max_cutout_size_arcsec"]),
            near_duplicate_arcsec=float(cat["near_duplicate_arcsec"]),
            neighbour_radius_arcsec=float(cat["neighbour_radius_arcsec"]),
        )

    def to_params(self) -> dict:
        """Plain values for a rule's ``params`` (a change re-runs the rule)."""
        return asdict(self)


def read_catalog(path: str | Path, settings: CatalogSettings) -> pd.DataFrame:
    """Read and validate a CSV catalog.

    Returns a DataFrame with columns ``source`` (slug, unique), ``name``, ``ra_deg``,
    ``dec_deg``, ``cutout_size_arcsec``, ``row`` (1-based data row) in file order. Raises
    ``CatalogError`` listing every problem with its row number.
    """
    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"catalog file {str(path)!r} does not exist")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError as exc:
        raise CatalogError(
            f"catalog {str(path)!r} is empty: expected a CSV header line "
            f"({', '.join(settings.columns.values())}) and one row per source"
        ) from exc
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise CatalogError(f"catalog {str(path)!r} is not a readable CSV file: {exc}") from exc
    return validate_catalog(raw, settings, origin=str(path))


def _parse_float(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def validate_catalog(raw: pd.DataFrame, settings: CatalogSettings, origin: str = "catalog"):
    cols = settings.columns
    missing = [cols[k] for k in ("name", "ra", "dec") if cols[k] not in raw.columns]
    if missing:
        raise CatalogError(
            f"{origin}: missing required column(s) {missing}; found {list(raw.columns)} "
            f"(column names are set by config key catalog_options.columns)"
        )
    if raw.empty:
        raise CatalogError(f"{origin}: the catalog has no rows")

    problems: list[str] = []
    names = raw[cols["name"]].astype(str).str.strip()
    ra_text = raw[cols["ra"]].astype(str).str.strip()
    dec_text = raw[cols["dec"]].astype(str).str.strip()
    ra = ra_text.map(_parse_float).to_numpy(dtype=float)
    dec = dec_text.map(_parse_float).to_numpy(dtype=float)
    if cols["size"] in raw.columns:
        size_text = raw[cols["size"]].astype(str).str.strip()
        size = np.array([_parse_float(s) if s else settings.default_size_arcsec for s in size_text])
    else:
        size_text = pd.Series([""] * len(raw))
        size = np.full(len(raw), settings.default_size_arcsec)

    slugs: list[str | None] = []
    for i, name in enumerate(names):
        row = i + 1
        if not name:
            problems.append(f"row {row}: empty {cols['name']}")
            slugs.append(None)
            continue
        try:
            slugs.append(safe_slug(name))
        except ValueError as exc:
            problems.append(f"row {row}: {exc}")
            slugs.append(None)
        if not (np.isfinite(ra[i]) and 0.0 <= ra[i] <= 360.0):
            problems.append(
                f"row {row} ({name!r}): {cols['ra']}={ra_text.iloc[i]!r} is not in [0, 360]"
            )
        if not (np.isfinite(dec[i]) and -90.0 <= dec[i] <= 90.0):
            problems.append(
                f"row {row} ({name!r}): {cols['dec']}={dec_text.iloc[i]!r} is not in [-90, 90]"
            )
        lo, hi = settings.min_size_arcsec, settings.max_size_arcsec
        if not np.isfinite(size[i]) or not lo <= size[i] <= hi:
            problems.append(
                f"row {row} ({name!r}): {cols['size']}={size_text.iloc[i] or size[i]!r} is not "
                f"in [{lo:g}, {hi:g}] arcsec"
            )

    # Duplicate names, then distinct names whose slugs collide (they would share files).
    first_by_name: dict[str, int] = {}
    first_by_slug: dict[str, tuple[int, str]] = {}
    for i, (name, slug) in enumerate(zip(names, slugs, strict=True)):
        if not name:
            continue
        if name in first_by_name:
            problems.append(
                f"row {i + 1}: duplicate name {name!r} (first at row {first_by_name[name]})"
            )
            continue
        first_by_name[name] = i + 1
        if slug is None:
            continue
        if slug in first_by_slug:
            r, other = first_by_slug[slug]
            problems.append(
                f"row {i + 1}: name {name!r} becomes file name {slug!r}, the same as row {r} "
                f"({other!r}); rename one of them"
            )
        else:
            first_by_slug[slug] = (i + 1, name)

    if problems:
        shown = problems[:50]
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        raise CatalogError(f"{origin}: {len(problems)} problem(s):\n  " + "\n  ".join(shown) + more)

    table = pd.DataFrame(
        {
            "source": slugs,
            "name": names.to_numpy(),
            "ra_deg": ra,
            "dec_deg": dec,
            "cutout_size_arcsec": size,
            "row": np.arange(1, len(raw) + 1),
        }
    )
    pairs = near_duplicates(table, settings.near_duplicate_arcsec)
    for a, b, sep in pairs:
        log.warning(
            "catalog rows %d (%r) and %d (%r) are %.2f arcsec apart: near-duplicate positions "
            "(both are measured; each is fitted with the other as a neighbour)",
            table.row[a],
            table.name[a],
            table.row[b],
            table.name[b],
            sep,
        )
    return table


def _coords(table: pd.DataFrame) -> SkyCoord:
    return SkyCoord(table["ra_deg"].to_numpy() * u.deg, table["dec_deg"].to_numpy() * u.deg)


def near_duplicates(table: pd.DataFrame, radius_arcsec: float) -> list[tuple[int, int, float]]:
    """Index pairs (i < j) of catalog rows closer than ``radius_arcsec`` (astropy KD-tree)."""
    if len(table) < 2 or radius_arcsec <= 0:
        return []
    c = _coords(table)
    i, j, sep, _ = search_around_sky(c, c, radius_arcsec * u.arcsec)
    keep = i < j
    return [
        (int(a), int(b), float(s))
        for a, b, s in zip(i[keep], j[keep], sep[keep].arcsec, strict=True)
    ]


def neighbour_lists(table: pd.DataFrame, radius_arcsec: float) -> dict[str, list[list[float]]]:
    """For each source, the [ra, dec] of other catalog sources within ``radius_arcsec``.

    These are fitted jointly at fixed positions. Sorted by separation for determinism.
    """
    out: dict[str, list[list[float]]] = {s: [] for s in table["source"]}
    if len(table) < 2 or radius_arcsec <= 0:
        return out
    c = _coords(table)
    i, j, sep, _ = search_around_sky(c, c, radius_arcsec * u.arcsec)
    keep = i != j
    i, j, sep = i[keep], j[keep], sep[keep].arcsec
    order = np.lexsort((j, sep, i))
    src = table["source"].to_numpy()
    ra = table["ra_deg"].to_numpy()
    dec = table["dec_deg"].to_numpy()
    for k in order:
        out[src[i[k]]].append([float(ra[j[k]]), float(dec[j[k]])])
    return out
