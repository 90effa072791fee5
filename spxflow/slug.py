"""The one place where a catalog name becomes a file-name component."""

from __future__ import annotations

import re
import unicodedata

MAX_SLUG_LENGTH = 80
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_slug(name: str) -> str:
    """File-name-safe slug of a source name.

    Letters, digits and ``. _ + -`` are kept, every other run of characters becomes one ``_``
    (so ``../``, ``/``, quotes, ``$()`` and spaces can never reach a path); leading dots and
    separators are stripped so the slug is never hidden or relative. Raises ``ValueError`` when
    nothing usable is left.
    """
    text = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode("ascii")
    slug = _UNSAFE.sub("_", text.strip())
    slug = slug.strip("._-+")
    slug = re.sub(r"_{2,}", "_", slug)[:MAX_SLUG_LENGTH].rstrip("._-+")
    if not slug:
        raise ValueError(f"source name {name!r} has no characters usable in a file name")
    return slug


# Snakemake wildcard constraint matching exactly the strings safe_slug can return.
SLUG_REGEX = r"[A-Za-z0-9][A-Za-z0-9._+-]*"
