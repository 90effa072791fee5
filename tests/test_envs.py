"""The declared dependencies follow from the code.

- Every third-party module imported by the workflow (spxflow/, scripts/, workflow/*.smk,
  Snakefile) is declared in pyproject.toml [project].dependencies AND envs/spxflow.yaml (conda,
  for `--sdm conda`); declared runtime dependencies that nothing imports must be listed in
  RUNTIME_ONLY with a reason, so stale declarations show up.
- Every third-party module imported by tests/ is in the `test` extra or the runtime
  dependencies (the README's test command installs `.[test]` only); modules of the `bench`
  extra (photutils) are only imported after `pytest.importorskip`.
- pyproject.toml and envs/spxflow.yaml list the same packages with the same plain floors.
The conda solve itself is not tested (no conda channels here).
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections import defaultdict
from functools import cache
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ENV_FILE = REPO / "envs" / "spxflow.yaml"
PYPROJECT = REPO / "pyproject.toml"

# Files whose imports the workflow needs at run time.
RUNTIME_SOURCES = ("spxflow/**/*.py", "scripts/**/*.py", "workflow/**/*.py", "workflow/**/*.smk")
RUNTIME_SNAKEFILES = ("Snakefile",)
TEST_SOURCES = ("tests/**/*.py",)
FIRST_PARTY = {"spxflow", "tests"}

# Import name -> distribution name where they differ and the fallback
# (importlib.metadata.packages_distributions(), i.e. what is installed) may not know it.
IMPORT_TO_DIST = {
    "yaml": "pyyaml",
    "PIL": "pillow",
    "snakemake_executor_plugin_slurm": "snakemake-executor-plugin-slurm",
}

# Runtime dependencies that nothing imports by name (or that are needed beyond the imports).
RUNTIME_ONLY = {
    "scipy": "astropy.coordinates.search_around_sky (spxflow/catalog.py, spxflow/sim) builds "
    "its KD-tree with scipy.spatial, imported only when called",
    "pyarrow": "pandas' parquet engine (DataFrame.to_parquet / pd.read_parquet)",
    "snakemake-executor-plugin-slurm": "loaded by snakemake for `--executor slurm` "
    "(profiles/slurm)",
}
# `test` extra entries that no test imports.
TEST_TOOLS = {
    "pytest-xdist": "pytest addopts `-n 2`",
    "ruff": "lint in .ci/run (ruff check, ruff format --check)",
    "snakefmt": "lint in .ci/run (snakefmt --check)",
}
# Optional extras whose modules tests may use only behind pytest.importorskip.
SKIP_ONLY_EXTRAS = ("bench",)

# PyPI name (normalised, extras dropped) -> conda-forge/bioconda name, where they differ.
CONDA_NAME: dict[str, str] = {}
# Conda-only entries that have no [project] dependency counterpart.
CONDA_ONLY = {"python", "pip"}
_REQ = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(?:\[[^\]]*\])?\s*(.*)$")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _split(spec: str) -> tuple[str, str]:
    m = _REQ.match(spec)
    assert m, f"cannot parse requirement {spec!r}"
    return _norm(m.group(1)), m.group(2).replace(" ", "")


def _conda(pypi_name: str) -> str:
    return CONDA_NAME.get(pypi_name, pypi_name)


# --- declarations ---------------------------------------------------------------------------


def _project() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["project"]


def pyproject_requirements() -> dict[str, str]:
    """[project].dependencies as {conda name: spec}, plus python from requires-python."""
    project = _project()
    reqs = {_conda(name): spec for name, spec in map(_split, project["dependencies"])}
    reqs["python"] = project["requires-python"].replace(" ", "")
    return reqs


def pyproject_runtime() -> set[str]:
    """Normalised PyPI names of [project].dependencies."""
    return {_split(s)[0] for s in _project()["dependencies"]}


def pyproject_extra(extra: str) -> set[str]:
    return {_split(s)[0] for s in _project().get("optional-dependencies", {}).get(extra, [])}


def conda_requirements() -> tuple[dict[str, str], list]:
    env = yaml.safe_load(ENV_FILE.read_text())
    reqs, pip = {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip.extend(dep.get("pip", []))
            continue
        name, spec = _split(dep)
        reqs[name] = spec
    return reqs, pip


# --- imports found in the code ----------------------------------------------------------------

_SMK_IMPORT = re.compile(r"^[ \t]*import[ \t]+([\w. \t,]+?)[ \t]*(?:#.*)?$", re.M)
_SMK_FROM = re.compile(r"^[ \t]*from[ \t]+(\w[\w.]*)[ \t]+import\b", re.M)


def _py_imports(tree: ast.AST) -> list[tuple[str, int]]:
    """(top-level module, line) of every absolute import, at any depth (functions included)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name.split(".")[0], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module.split(".")[0], node.lineno))
    return found


def _smk_imports(text: str) -> list[tuple[str, int]]:
    """Snakemake files are not pure Python: import statements at the start of a line."""
    found = []
    for m in _SMK_IMPORT.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        for part in m.group(1).split(","):
            name = part.split()[0] if part.split() else ""
            if name:
                found.append((name.split(".")[0], line))
    for m in _SMK_FROM.finditer(text):
        found.append((m.group(1).split(".")[0], text.count("\n", 0, m.start()) + 1))
    return found


def _files(patterns: tuple[str, ...], snakefiles: tuple[str, ...] = ()) -> list[Path]:
    files = {p for pat in patterns for p in REPO.glob(pat)}
    files |= {REPO / s for s in snakefiles if (REPO / s).is_file()}
    return sorted(p for p in files if "__pycache__" not in p.parts)


def third_party_imports(files: list[Path]) -> dict[str, list[str]]:
    """{top-level module: ["path:line", ...]} of the third-party imports of ``files``."""
    # Modules next to a script or test (its directory is on sys.path): scripts/, tests/.
    local = {p.stem for p in files if p.suffix == ".py" and p.parent.name in ("scripts", "tests")}
    found: dict[str, list[str]] = defaultdict(list)
    for path in files:
        text = path.read_text()
        if path.suffix == ".py":
            imports = _py_imports(ast.parse(text, filename=str(path)))
        else:
            imports = _smk_imports(text)
        for module, line in imports:
            if module in sys.stdlib_module_names or module in FIRST_PARTY or module in local:
                continue
            found[module].append(f"{_rel(path)}:{line}")
    return dict(found)


@cache
def _installed() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distributions(module: str) -> set[str]:
    """Distribution names (normalised) that provide ``module``: the explicit table, then what
    is installed, then the import name itself (a guess, reported as such)."""
    if module in IMPORT_TO_DIST:
        return {_norm(IMPORT_TO_DIST[module])}
    return {_norm(d) for d in _installed().get(module, [module])}


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(path)


def _where(sites: list[str]) -> str:
    return ", ".join(sites[:4]) + (f" (+{len(sites) - 4} more)" if len(sites) > 4 else "")


def _dist_label(module: str) -> str:
    dists = sorted(distributions(module))
    guessed = module not in IMPORT_TO_DIST and module not in _installed()
    note = " (guessed from the import name; add it to IMPORT_TO_DIST if wrong)" if guessed else ""
    return f"distribution {' or '.join(dists)}{note}"


# --- tests ------------------------------------------------------------------------------------


def test_scanner_finds_imports_in_functions_and_smk_files():
    # Guards the guard: an empty scan would make every check below pass vacuously.
    tree = ast.parse("def f():\n    import scipy.special\n    from . import x\n")
    assert _py_imports(tree) == [("scipy", 2)]
    smk = "import os, yaml as y\nfrom snakemake.utils import validate\nrule a:\n    shell: 'x'\n"
    assert sorted(_smk_imports(smk)) == [("os", 1), ("snakemake", 2), ("yaml", 1)]
    runtime = third_party_imports(_files(RUNTIME_SOURCES, RUNTIME_SNAKEFILES))
    assert {"numpy", "pandas", "astropy", "yaml", "snakemake"} <= set(runtime), runtime


def test_every_imported_module_is_declared_in_pyproject_and_the_conda_env():
    imports = third_party_imports(_files(RUNTIME_SOURCES, RUNTIME_SNAKEFILES))
    pyproject = pyproject_runtime()
    conda = set(conda_requirements()[0])
    problems = []
    for module, sites in sorted(imports.items()):
        dists = distributions(module)
        lacking = []
        if not dists & pyproject:
            lacking.append("pyproject.toml [project].dependencies")
        if not {_conda(d) for d in dists} & conda:
            lacking.append(ENV_FILE.relative_to(REPO).as_posix())
        if lacking:
            problems.append(
                f"module {module!r} ({_dist_label(module)}) is imported by {_where(sites)} "
                f"but missing from {' and '.join(lacking)}"
            )
    assert not problems, "undeclared runtime dependencies:\n  " + "\n  ".join(problems)


def test_runtime_only_dependencies_are_declared_in_both_files():
    pyproject = pyproject_runtime()
    conda = set(conda_requirements()[0])
    problems = []
    for dist, reason in RUNTIME_ONLY.items():
        lacking = []
        if dist not in pyproject:
            lacking.append("pyproject.toml [project].dependencies")
        if _conda(dist) not in conda:
            lacking.append(ENV_FILE.relative_to(REPO).as_posix())
        if lacking:
            problems.append(f"{dist} (needed: {reason}) is missing from {' and '.join(lacking)}")
    assert not problems, "undeclared runtime-only dependencies:\n  " + "\n  ".join(problems)


def test_no_stale_runtime_declarations():
    imports = third_party_imports(_files(RUNTIME_SOURCES, RUNTIME_SNAKEFILES))
    used = set().union(*(distributions(m) for m in imports)) | set(RUNTIME_ONLY)
    stale = sorted(pyproject_runtime() - used)
    assert not stale, (
        f"declared in pyproject.toml [project].dependencies but imported by nothing in "
        f"{', '.join(RUNTIME_SOURCES + RUNTIME_SNAKEFILES)}: {stale}; remove them or list them "
        f"in tests/test_envs.py RUNTIME_ONLY with the reason they are needed"
    )


def _own_nodes(scope: ast.AST):
    """The nodes of ``scope`` outside its nested functions."""
    for child in ast.iter_child_nodes(scope):
        if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield child
            yield from _own_nodes(child)


def _importorskipped(tree: ast.Module) -> dict[int, set[tuple[str, int]]]:
    """{id(scope): {(module, line)}} of the ``pytest.importorskip("module")`` calls made
    directly in each scope (the module, every function); they guard the imports that follow
    in that scope and in the functions nested in it."""
    calls: dict[int, set[tuple[str, int]]] = {}
    scopes = [tree] + [
        n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    for scope in scopes:
        calls[id(scope)] = {
            (n.args[0].value.split(".")[0], n.lineno)
            for n in _own_nodes(scope)
            if isinstance(n, ast.Call)
            and getattr(n.func, "attr", getattr(n.func, "id", None)) == "importorskip"
            and n.args
            and isinstance(n.args[0], ast.Constant)
            and isinstance(n.args[0].value, str)
        }
    return calls


def _unguarded_imports(path: Path, modules: set[str]) -> list[str]:
    """ "path:line" of imports of ``modules`` not preceded by a pytest.importorskip of the
    same module in an enclosing scope."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skips = _importorskipped(tree)
    bad = []

    def visit(node: ast.AST, enclosing: list[ast.AST]) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            enclosing = [*enclosing, node]
        for module, line in (
            _py_imports(node) if isinstance(node, ast.Import | ast.ImportFrom) else []
        ):
            guarded = any(
                m == module and skip_line < line
                for scope in enclosing
                for m, skip_line in skips[id(scope)]
            )
            if module in modules and not guarded:
                bad.append(f"{_rel(path)}:{line}")
        for child in ast.iter_child_nodes(node):
            visit(child, enclosing)

    visit(tree, [tree])
    return bad


def _modules_of(dists: set[str], imports: dict[str, list[str]]) -> set[str]:
    return {m for m in imports if distributions(m) & dists}


def test_importorskip_guard_is_recognised(tmp_path):
    hard = tmp_path / "test_hard.py"
    hard.write_text("import pytest\nfrom photutils.psf import ImagePSF\n")
    late = tmp_path / "test_late.py"
    late.write_text(
        "import pytest\ndef test_a():\n    import photutils\n    pytest.importorskip('photutils')\n"
    )
    skipped = tmp_path / "test_skipped.py"
    skipped.write_text(
        "import pytest\n"
        "psf = pytest.importorskip('photutils.psf')\n"
        "def test_b():\n    from photutils.psf import ImagePSF\n"
        "def test_c():\n    pytest.importorskip('photutils')\n    import photutils\n"
    )
    sibling = tmp_path / "test_sibling.py"
    sibling.write_text(
        "import pytest\n"
        "def test_c():\n    pytest.importorskip('photutils')\n"
        "def test_d():\n    import photutils\n"
    )
    assert _unguarded_imports(hard, {"photutils"}) == [f"{hard}:2"]
    assert _unguarded_imports(late, {"photutils"}) == [f"{late}:3"]
    assert _unguarded_imports(skipped, {"photutils"}) == []
    assert _unguarded_imports(sibling, {"photutils"}) == [f"{sibling}:5"]


def test_tests_import_only_test_extra_or_runtime_dependencies():
    files = _files(TEST_SOURCES)
    imports = third_party_imports(files)
    allowed = pyproject_runtime() | pyproject_extra("test")
    skip_only = set().union(*(pyproject_extra(e) for e in SKIP_ONLY_EXTRAS))
    problems = []
    for module, sites in sorted(imports.items()):
        dists = distributions(module)
        if dists & allowed:
            continue
        if dists & skip_only:
            continue  # checked below: only behind pytest.importorskip
        problems.append(
            f"module {module!r} ({_dist_label(module)}) is imported by {_where(sites)} but is "
            f"in neither the `test` extra nor [project].dependencies of pyproject.toml "
            f"(the README's test command installs only '.[test]')"
        )
    skip_modules = _modules_of(skip_only, imports)
    for path in files:
        for site in _unguarded_imports(path, skip_modules):
            problems.append(
                f"{site} imports a {'/'.join(SKIP_ONLY_EXTRAS)}-extra module "
                f"({', '.join(sorted(skip_modules))}) without a preceding "
                f"pytest.importorskip: the suite must pass with '.[test]' alone"
            )
    assert not problems, "test dependencies:\n  " + "\n  ".join(problems)


def test_no_stale_test_extra_entries():
    imports = third_party_imports(_files(TEST_SOURCES))
    used = set().union(*(distributions(m) for m in imports)) | set(TEST_TOOLS)
    stale = sorted(pyproject_extra("test") - used)
    assert not stale, (
        f"in the `test` extra but imported by no test: {stale}; remove them or list them in "
        f"tests/test_envs.py TEST_TOOLS with the reason"
    )


def test_conda_env_has_the_same_packages_and_floors_as_pyproject():
    py = pyproject_requirements()
    conda, _ = conda_requirements()
    conda_deps = {k: v for k, v in conda.items() if k not in CONDA_ONLY - {"python"}}
    missing = sorted(set(py) - set(conda_deps))
    extra = sorted(set(conda_deps) - set(py))
    assert not missing, f"in pyproject.toml but not envs/spxflow.yaml: {missing}"
    assert not extra, f"in envs/spxflow.yaml but not pyproject.toml: {extra}"
    differ = {k: (py[k], conda_deps[k]) for k in py if py[k] != conda_deps[k]}
    assert not differ, f"version floors differ (pyproject, conda): {differ}"


def test_every_floor_is_a_lower_bound_only():
    # A pin or cap in one list and not the other would make the two environments diverge.
    for name, spec in {**pyproject_requirements(), **conda_requirements()[0]}.items():
        if name in CONDA_ONLY - {"python"}:
            continue
        assert re.fullmatch(r">=[0-9][0-9.]*", spec), f"{name}: {spec!r} is not a plain floor"


def test_env_installs_spxflow_itself_from_the_checkout():
    _, pip = conda_requirements()
    assert "-e .." in pip  # rule scripts import spxflow; ".." is resolved from envs/


def test_channels_are_explicit():
    env = yaml.safe_load(ENV_FILE.read_text())
    assert env["channels"][:2] == ["conda-forge", "bioconda"]
