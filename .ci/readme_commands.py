#!/usr/bin/env python3
"""Print one of the README's CI-checked commands: ``readme_commands.py demo|test [README]``.

The command is the single line of the ```bash fenced block that immediately follows the marker
``<!-- ci: <name> command ... -->`` in README.md (blank lines between marker and fence are
allowed). Fails (exit 1, message on stderr) if the marker is missing or repeated, no ```bash
block follows it, the block is unterminated, or the block does not hold exactly one command.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

NAMES = ("demo", "test")
README = Path(__file__).resolve().parents[1] / "README.md"


def command(name: str, text: str) -> str:
    marker = re.compile(rf"^\s*<!--\s*ci:\s*{re.escape(name)} command\b.*-->\s*$")
    lines = text.splitlines()
    hits = [i for i, line in enumerate(lines) if marker.match(line)]
    if len(hits) != 1:
        raise ValueError(
            f"expected exactly one '<!-- ci: {name} command ... -->' marker, found {len(hits)}"
        )
    i = hits[0] + 1
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i == len(lines) or lines[i].strip() != "```bash":
        found = lines[i].strip() if i < len(lines) else "end of file"
        raise ValueError(
            f"line {hits[0] + 1}: the {name} marker is not followed by a ```bash block "
            f"(found {found!r})"
        )
    start = i + 1
    end = next((j for j in range(start, len(lines)) if lines[j].strip().startswith("```")), None)
    if end is None:
        raise ValueError(f"line {start}: the {name} ```bash block is never closed")
    body = [line.strip() for line in lines[start:end] if line.strip()]
    if len(body) != 1:
        raise ValueError(
            f"lines {start + 1}-{end}: the {name} block must hold exactly one command, "
            f"found {len(body)} non-blank lines: {body}"
        )
    cmd = body[0]
    if cmd.startswith("#") or cmd.endswith("\\"):
        raise ValueError(f"line {start + 1}: the {name} block's line is not one command: {cmd!r}")
    return cmd


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or argv[1] not in NAMES:
        print(f"usage: {argv[0]} {{{'|'.join(NAMES)}}} [README.md]", file=sys.stderr)
        return 2
    path = Path(argv[2]) if len(argv) == 3 else README
    try:
        print(command(argv[1], path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        print(f"{argv[0]}: {path}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
