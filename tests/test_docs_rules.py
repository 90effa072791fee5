"""Every rule (and job group) the documentation names exists in the workflow.

Snakemake silently ignores an unknown rule name in ``--set-resources``, ``--set-threads``,
``set-resources:`` / ``set-threads:`` of a profile and several other places, so a doc or
profile that says ``photometry`` after the rule became ``measure`` changes nothing and nobody
notices. This test collects the rule names that the docs mention and checks each one against
``snakemake --list-rules`` (one call per session, in the repository root).

Where names are looked for:

- ``README.md``, ``docs/*.md``, ``config/README.md``, ``workflow/report/*.rst``: the whole text;
- ``config/config.yaml`` and ``profiles/**/*.yaml``: comments, and the keys of ``set-threads:``,
  ``set-resources:`` and ``groups:`` (rule names) and ``group-components:`` (group names);
- ``Snakefile`` and ``workflow/rules/*.smk``: comments;
- ``scripts/*.py``: string literals (the docstrings name their rule);
- ``spxflow/**/*.py``: string literals, command patterns only (``--forcerun X``, ``snakemake X``
  ...), i.e. the commands that messages tell users to run.

Patterns (``NAME`` is an identifier):

- command options: ``--forcerun NAME``, ``-R NAME`` (on a line that mentions snakemake),
  ``--until NAME``, ``--allowed-rules NAME``, ``--omit-from NAME``, ``--set-threads NAME=``,
  ``--set-resources NAME:``, ``--groups NAME=``; ``--group-components NAME=`` names a group;
- inline profile text: ``set-threads: NAME``, ``set-resources: NAME``, ``groups: NAME:``;
  ``group-components: NAME`` names a group;
- YAML keys under ``set-threads:`` / ``set-resources:`` / ``groups:`` in profiles and in fenced
  ``yaml`` blocks of the docs (keys under ``group-components:`` are groups);
- prose: ``rule `NAME` ``, `` `rule NAME` ``, `` `NAME` rule``, `` `NAME` job(s)``;
  ``group `NAME` `` and `` `NAME` group`` name groups;
- ``snakemake NAME`` in code (fenced blocks, inline code spans, string literals) when NAME is
  a bare identifier, not an option, a path or a file name.

Not marked ``slow``: it runs in every ``python -m pytest`` (a few seconds, one Snakemake call;
snakemake comes with the ``test`` extra's base dependencies).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
# A name ends where no path, file name or option continues it (a sentence's full stop may).
END = r"(?![\w/:=-])(?!\.\w)"
# English words that follow "snakemake" or an option in prose ("the snakemake object",
# "(--forcerun because Snakemake skips it ...)", "now run snakemake with ..."): never rule names.
NOT_NAMES = {
    "a", "also", "and", "again", "as", "at", "because", "but", "by", "first", "for", "from",
    "if", "in", "is", "it", "its", "itself", "later", "next", "object", "of", "on", "only",
    "or", "run", "runs", "so", "that", "the", "then", "this", "to", "when", "will", "with",
}  # fmt: skip


@dataclass(frozen=True)
class Mention:
    path: str
    line: int
    kind: str  # "rule" or "group"
    name: str
    text: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: unknown {self.kind} {self.name!r}   ({self.text.strip()})"


# Unambiguous wherever they appear (an option followed by a name).
COMMAND_PATTERNS = [
    ("rule", re.compile(rf"(?<![\w-])--forcerun(?:=|\s+)['\"]?({IDENT}){END}")),
    ("rule", re.compile(rf"(?<![\w-])--until(?:=|\s+)['\"]?({IDENT}){END}")),
    ("rule", re.compile(rf"(?<![\w-])--allowed-rules(?:=|\s+)['\"]?({IDENT}){END}")),
    ("rule", re.compile(rf"(?<![\w-])--omit-from(?:=|\s+)['\"]?({IDENT}){END}")),
    ("rule", re.compile(rf"(?<![\w-])--set-threads(?:=|\s+)['\"]?({IDENT})=")),
    ("rule", re.compile(rf"(?<![\w-])--set-resources(?:=|\s+)['\"]?({IDENT}):")),
    ("rule", re.compile(rf"(?<![\w-])--groups(?:=|\s+)['\"]?({IDENT})=")),
    ("group", re.compile(rf"(?<![\w-])--group-components(?:=|\s+)['\"]?({IDENT})=")),
]
# -R is short and common elsewhere (cp -R): only within a snakemake command.
SHORT_FORCERUN = re.compile(rf"\bsnakemake\b[^`|;&\n]*?\s-R\s+['\"]?({IDENT}){END}")
# `snakemake NAME`: a bare identifier right after the command (not -x, not a path or file).
SNAKEMAKE_TARGET = re.compile(rf"(?<![\w./-])snakemake\s+({IDENT}){END}")
# Profile settings written inline in prose or comments.
INLINE_PROFILE_PATTERNS = [
    ("rule", re.compile(rf"(?<![\w-])set-(?:threads|resources):\s+['\"]?({IDENT})\b(?!\()")),
    ("rule", re.compile(rf"(?<![\w-])groups:\s+['\"]?({IDENT})['\"]?:")),
    ("group", re.compile(rf"(?<![\w-])group-components:\s+['\"]?({IDENT})\b")),
]
# Prose may name a family of chunk rules (`measure` for measure_c000000, ...): "family".
PROSE_PATTERNS = [
    ("family", re.compile(rf"\b[Rr]ule\s+`+({IDENT})`+")),
    ("family", re.compile(rf"`+rule\s+({IDENT})`+")),
    ("family", re.compile(rf"`+({IDENT})`+\s+(?:rules?|jobs?)\b")),
    ("group", re.compile(rf"\bgroups?\s+`+({IDENT})`+")),
    ("group", re.compile(rf"`+({IDENT})`+\s+groups?\b")),
]
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
YAML_RULE_BLOCKS = {"set-threads": "rule", "set-resources": "rule", "groups": "rule"}
YAML_GROUP_BLOCKS = {"group-components": "group"}
YAML_BLOCK = re.compile(r"^(\s*)(set-threads|set-resources|groups|group-components):\s*(#.*)?$")
YAML_KEY = re.compile(rf"^\s*(?:-\s*)?['\"]?({IDENT})['\"]?\s*[:=]")


def _commands(path: str, line: int, text: str) -> list[Mention]:
    out = []
    for kind, pattern in [*COMMAND_PATTERNS, ("rule", SHORT_FORCERUN)]:
        out += [
            Mention(path, line, kind, m.group(1), text)
            for m in pattern.finditer(text)
            if m.group(1) not in NOT_NAMES
        ]
    return out


def _targets(path: str, line: int, code: str, text: str) -> list[Mention]:
    return [
        Mention(path, line, "rule", m.group(1), text)
        for m in SNAKEMAKE_TARGET.finditer(code)
        if m.group(1) not in NOT_NAMES
    ]


def _prose(path: str, line: int, text: str) -> list[Mention]:
    out = []
    for kind, pattern in INLINE_PROFILE_PATTERNS + PROSE_PATTERNS:
        out += [Mention(path, line, kind, m.group(1), text) for m in pattern.finditer(text)]
    return out


def scan_text_line(path: str, line: int, text: str, in_code: bool) -> list[Mention]:
    """Every pattern on one line of documentation (``in_code``: inside a fenced block)."""
    out = _commands(path, line, text) + _prose(path, line, text)
    code_parts = [text] if in_code else [m.group(2) for m in CODE_SPAN.finditer(text)]
    for code in code_parts:
        out += _targets(path, line, code, text)
    return out


def scan_yaml_keys(path: str, lines: list[str], first_line: int = 1) -> list[Mention]:
    """Keys directly under set-threads:/set-resources:/groups: (rules) and group-components:
    (groups), by indentation so that every key keeps its line number."""
    out = []
    for i, line in enumerate(lines):
        m = YAML_BLOCK.match(line)
        if not m:
            continue
        kind = {**YAML_RULE_BLOCKS, **YAML_GROUP_BLOCKS}[m.group(2)]
        indent, child = len(m.group(1)), None
        for j in range(i + 1, len(lines)):
            sub = lines[j]
            if not sub.strip() or sub.lstrip().startswith("#"):
                continue
            level = len(sub) - len(sub.lstrip())
            if level <= indent and not sub.lstrip().startswith("- "):
                break
            if level <= indent:  # a list at the block's own indentation
                level = indent + 1
            child = level if child is None else child
            k = YAML_KEY.match(sub)
            if level == child and k:
                out.append(Mention(path, first_line + j, kind, k.group(1), sub))
    return out


def scan_markdown(path: str, text: str) -> list[Mention]:
    out: list[Mention] = []
    lines = text.splitlines()
    fence, lang, block_start, block = None, "", 0, []
    for n, line in enumerate(lines, 1):
        m = FENCE.match(line)
        if fence is None and m:
            fence, lang, block_start, block = m.group(1), m.group(2).lower(), n + 1, []
            continue
        if fence is not None and line.strip().startswith(fence):
            if lang in ("yaml", "yml"):
                out += scan_yaml_keys(path, block, block_start)
            fence = None
            continue
        if fence is not None:
            block.append(line)
        out += scan_text_line(path, n, line, in_code=fence is not None)
    return out


def _comment(line: str) -> str | None:
    m = re.search(r"(?:^|\s)#(.*)$", line)
    return m.group(1) if m else None


def scan_yaml(path: str, text: str) -> list[Mention]:
    lines = text.splitlines()
    out = scan_yaml_keys(path, lines)
    for n, line in enumerate(lines, 1):
        comment = _comment(line)
        if comment is not None:
            out += scan_text_line(path, n, comment, in_code=False)
    return out


def scan_comments(path: str, text: str) -> list[Mention]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        comment = _comment(line)
        if comment is not None:
            out += scan_text_line(path, n, comment, in_code=False)
    return out


def _string_literals(text: str):
    """(first line, last line, value) of every string literal; f-strings and implicit
    concatenations joined (so a command split over two literals is still seen whole)."""
    tree = ast.parse(text)
    inside_fstring = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            inside_fstring.update(id(v) for v in node.values)
            value = "".join(
                v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "{}"
                for v in node.values
            )
            yield node.lineno, node.end_lineno, value
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in inside_fstring
        ):
            yield node.lineno, node.end_lineno, node.value


def scan_python(path: str, text: str, prose: bool) -> list[Mention]:
    source = text.splitlines()
    out = []
    for first, last, value in _string_literals(text):
        multiline = "\n" in value  # a triple-quoted string: its lines are the source's lines
        for k, line in enumerate(value.splitlines() or [value]):
            found = _commands(path, first + k, line) + _targets(path, first + k, line, line)
            if prose:
                found += _prose(path, first + k, line)
            if not multiline:  # one line or implicit concatenation: the line naming the name
                found = [
                    Mention(path, _line_naming(source, first, last, m.name), m.kind, m.name, line)
                    for m in found
                ]
            out += found
    return out


def _line_naming(source: list[str], first: int, last: int, name: str) -> int:
    for n in range(first, (last or first) + 1):
        if re.search(rf"\b{re.escape(name)}\b", source[n - 1]):
            return n
    return first


def doc_files(root: Path) -> list[tuple[Path, str]]:
    """(file, how to scan it) for every documentation source under ``root``."""
    files = [(root / "README.md", "markdown"), (root / "config" / "README.md", "markdown")]
    files += [(p, "markdown") for p in sorted((root / "docs").glob("*.md"))]
    files += [(p, "markdown") for p in sorted((root / "workflow" / "report").glob("*.rst"))]
    files += [(root / "config" / "config.yaml", "yaml")]
    files += [(p, "yaml") for p in sorted((root / "profiles").rglob("*.yaml"))]
    files += [(root / "Snakefile", "comments")]
    files += [(p, "comments") for p in sorted((root / "workflow" / "rules").glob("*.smk"))]
    files += [(p, "python-prose") for p in sorted((root / "scripts").glob("*.py"))]
    files += [(p, "python") for p in sorted((root / "spxflow").rglob("*.py"))]
    return [(p, how) for p, how in files if p.is_file()]


def collect_mentions(root: Path) -> list[Mention]:
    scanners = {
        "markdown": scan_markdown,
        "yaml": scan_yaml,
        "comments": scan_comments,
        "python": lambda path, text: scan_python(path, text, prose=False),
        "python-prose": lambda path, text: scan_python(path, text, prose=True),
    }
    out: list[Mention] = []
    for path, how in doc_files(root):
        rel = path.relative_to(root).as_posix()
        out += scanners[how](rel, path.read_text(encoding="utf-8"))
    # One report per place and name.
    seen, unique = set(), []
    for m in out:
        key = (m.path, m.line, m.kind, m.name)
        if key not in seen:
            seen.add(key)
            unique.append(m)
    return unique


def known_groups(root: Path) -> set[str]:
    """Groups set by `group:` in the rules plus those a profile assigns in `groups:`."""
    groups = set()
    for smk in (root / "workflow" / "rules").glob("*.smk"):
        groups |= set(re.findall(r"^\s*group:\s*\n?\s*[\"'](\w+)[\"']", smk.read_text(), re.M))
    for profile in (root / "profiles").rglob("*.yaml"):
        groups |= set(((yaml.safe_load(profile.read_text()) or {}).get("groups") or {}).values())
    return groups


CHUNK_RULE = re.compile(r"^(\w+)_[bc]\d{6}$")


def families(rules: set[str]) -> set[str]:
    """Rules plus the families of chunk rules (``measure`` for ``measure_c000000``): a
    command needs a rule's own name, prose may name its family."""
    return rules | {m.group(1) for r in rules if (m := CHUNK_RULE.match(r))}


def unknown(mentions: list[Mention], rules: set[str], groups: set[str]) -> list[Mention]:
    return [
        m
        for m in mentions
        if (m.kind == "rule" and m.name not in rules)
        or (m.kind == "family" and m.name not in families(rules))
        or (m.kind == "group" and m.name not in groups)
    ]


def failure_message(bad: list[Mention], rules: set[str], groups: set[str]) -> str:
    return (
        f"{len(bad)} name(s) in the docs are not rules/groups of the workflow "
        f"(Snakemake silently ignores unknown rule names in --set-resources, set-threads, ...):\n"
        + "\n".join(f"  {m}" for m in bad)
        + f"\nrules (snakemake --list-rules): {', '.join(sorted(rules))}"
        + f"\ngroups: {', '.join(sorted(groups))}"
    )


@pytest.fixture(scope="module")
def workflow_rules() -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--list-rules"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"snakemake --list-rules failed:\n{proc.stdout}\n{proc.stderr}"
    rules = {ln.strip() for ln in proc.stdout.splitlines() if re.fullmatch(IDENT, ln.strip())}
    assert rules, f"snakemake --list-rules printed no rules:\n{proc.stdout}\n{proc.stderr}"
    return rules


def test_docs_name_only_existing_rules_and_groups(workflow_rules):
    mentions = collect_mentions(REPO)
    groups = known_groups(REPO)
    bad = unknown(mentions, workflow_rules, groups)
    assert not bad, failure_message(bad, workflow_rules, groups)
    # The scan must actually see the docs' mentions, or the check above proves nothing.
    named = {m.name for m in mentions if m.kind in ("rule", "family")}
    assert {"measure", "check", "all"} <= named, sorted(named)
    assert "per_chunk" in {m.name for m in mentions if m.kind == "group"}


def test_profile_keys_are_all_seen_by_the_scanner():
    # The indentation-based key scan (which keeps line numbers) agrees with a YAML parser.
    for profile in sorted((REPO / "profiles").rglob("*.yaml")):
        rel = profile.relative_to(REPO).as_posix()
        data = yaml.safe_load(profile.read_text()) or {}
        expected = {
            (block, key)
            for block in ("set-threads", "set-resources", "groups", "group-components")
            for key in (data.get(block) or {})
        }
        found = scan_yaml_keys(rel, profile.read_text().splitlines())
        lines = profile.read_text().splitlines()
        got = set()
        for m in found:
            # the block a key belongs to: the nearest block header above it
            header = next(
                YAML_BLOCK.match(lines[i]).group(2)
                for i in range(m.line - 2, -1, -1)
                if YAML_BLOCK.match(lines[i])
            )
            got.add((header, m.name))
        assert got == expected, rel


# The text the docs had before the rules were merged: `photometry` is not a rule.
OLD_README = """\
- **limits**: `cores` is the most CPUs one Slurm job asks for (≤ a node), `set-resources` holds
  more, `set-threads: photometry` the Numba threads of photometry (`cpus_per_task` follows),
- one-off overrides on the command line, e.g. `--set-resources photometry:mem_mb=8000`.
| `snakemake check --forcerun check` | re-verify (`--forcerun`: Snakemake skips a rule) |
"""
OLD_SLURM_DOC = """\
| photometry threads | `set-threads: photometry` | Numba threads of one photometry job |

```yaml
set-threads:
  photometry: 2
set-resources:
  measure:
    mem_mb: "2000 * attempt"
  cutouts:
    runtime: 10
```

```bash
snakemake --profile profiles/slurm --until discovery
snakemake -n -q rules
snakemake --profile profiles/local --report report.html
snakemake results/spectra/x.csv
```
"""
OLD_PROFILE = """\
set-threads:
  photometry: 2
set-resources:
  validate_catalog:
    mem_mb: "1000 * attempt"
  photometry:
    mem_mb: "2000 * attempt"
    cpus_per_task: "threads"
groups:
  calibration: calibration
group-components:
  per_source: 10
  per_sorce: 2
"""
OLD_MESSAGE = """\
def hint():
    log.warning(
        "cutouts are gone; to make them: snakemake --config cleanup=never "
        "--forcerun photometry"
    )
    return f"now run snakemake with your profile, or snakemake {1}"
"""


def test_scanner_catches_unknown_rules_in_a_copy_with_the_old_text(tmp_path, workflow_rules):
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (root / "profiles" / "slurm").mkdir(parents=True)
    (root / "workflow" / "rules").mkdir(parents=True)
    (root / "spxflow").mkdir()
    (root / "README.md").write_text(OLD_README)
    (root / "docs" / "slurm.md").write_text(OLD_SLURM_DOC)
    (root / "profiles" / "slurm" / "config.v8+.yaml").write_text(OLD_PROFILE)
    (root / "workflow" / "rules" / "measure.smk").write_text(
        'rule measure:\n    group:\n        "per_source"\n'
    )
    (root / "spxflow" / "hint.py").write_text(OLD_MESSAGE)

    groups = known_groups(root)
    assert groups == {"per_source", "calibration"}
    bad = unknown(collect_mentions(root), workflow_rules, groups)
    found = {(m.path, m.line, m.kind, m.name) for m in bad}
    assert found == {
        ("README.md", 2, "rule", "photometry"),
        ("README.md", 3, "rule", "photometry"),
        ("docs/slurm.md", 1, "rule", "photometry"),
        ("docs/slurm.md", 5, "rule", "photometry"),
        ("docs/slurm.md", 7, "rule", "measure"),  # a family of chunk rules, not a rule
        ("docs/slurm.md", 9, "rule", "cutouts"),
        ("docs/slurm.md", 14, "rule", "discovery"),
        ("profiles/slurm/config.v8+.yaml", 2, "rule", "photometry"),
        ("profiles/slurm/config.v8+.yaml", 6, "rule", "photometry"),
        ("profiles/slurm/config.v8+.yaml", 13, "group", "per_sorce"),
        ("spxflow/hint.py", 4, "rule", "photometry"),
    }, sorted(found)
    message = failure_message(bad, workflow_rules, groups)
    assert "README.md:3: unknown rule 'photometry'" in message
    assert "--set-resources photometry:mem_mb=8000" in message


@pytest.mark.parametrize(
    "text, names",
    [
        ("`snakemake check --forcerun check`", ["check", "check"]),
        ("snakemake --forcerun=measure -R source_products", ["measure", "source_products"]),
        ("`--until measure`, `--allowed-rules summary`, `--omit-from accuracy`",
         ["measure", "summary", "accuracy"]),
        ("`--set-threads measure=4`, `--set-resources 'measure:mem_mb=8000*attempt'`",
         ["measure", "measure"]),
        ("the `measure` job; rule `check`; `rule all` requests; the `qa_full` rule",
         ["measure", "check", "all", "qa_full"]),
        ("`set-threads: measure: 2`", ["measure"]),
        ("`snakemake all`", ["all"]),
        # not rule names
        ("`snakemake -n -q rules`", []),
        ("`snakemake --profile profiles/local --report report.html`", []),
        ("`snakemake results/spectra/x.csv`", []),
        ("thin rule scripts; every rule talks to IRSA; Snakemake skips a rule", []),
        ("run snakemake next; cp -R dir; `--forcerun`: Snakemake skips", []),
        ("parse the snakemake object; (--forcerun because Snakemake skips it)", []),
        ("`--set-resources`/`default-resources`; `set-threads` below", []),
    ],
)  # fmt: skip
def test_patterns(text, names):
    assert sorted(m.name for m in scan_text_line("x.md", 1, text, in_code=False)) == sorted(names)
