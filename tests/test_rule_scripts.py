"""Each rule's script calls the ``spxflow.rules`` function named after the rule and reads
every param the rule declares (params that nothing reads would only trigger reruns)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from spxflow import rules

REPO = Path(__file__).resolve().parents[1]
# Named rules (`rule x:`) and the chunk rules defined in loops (`rule:` with
# `name: f"measure_{chunk}"`), which count as their family (`measure`).
_RULE = re.compile(r"^( *)rule( \w+)?:\n((?:\1[ \t]+.*\n|\n)*)", re.MULTILINE)
_FAMILY = re.compile(r'name:\s*f"(\w+?)_\{(?:chunk|batch)\}"')


def declared_rules() -> dict[str, dict]:
    out = {}
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for m in _RULE.finditer(smk.read_text()):
            body = m.group(3)
            name = m.group(2).strip() if m.group(2) else _FAMILY.search(body).group(1)
            script = re.search(r'script:\n\s+"([^"]+)"', body)
            params = re.search(r"^( +)params:\n((?:\1    .*\n)+)", body, re.M)
            names = (
                re.findall(rf"^{params.group(1)}    (\w+)=", params.group(2), re.M)
                if params
                else []
            )
            out[name] = {
                "script": (smk.parent / script.group(1)).resolve() if script else None,
                "params": names,
            }
    return out


# Public functions of spxflow.rules that are not rules: the per-source step of each chunk
# rule, and the helpers the chunk rules' scripts call.
HELPERS = {
    "measure_source", "products_of_source", "qa_full_source", "discovered_by_source",
    "per_source", "recorded_files",
}  # fmt: skip


RULES = declared_rules()


def test_rules_module_has_one_function_per_rule_in_dag_order():
    functions = [
        name
        for name, f in inspect.getmembers(rules, inspect.isfunction)
        if f.__module__ == rules.__name__ and not name.startswith("_")
    ]
    assert {"measure", "source_products", "qa_full", "discover"} <= set(RULES)
    assert sorted(set(functions) - HELPERS) == sorted(r for r, d in RULES.items() if d["script"])
    order = [name for name in rules.__dict__ if name in functions and name not in HELPERS]
    dag = ["validate_catalog", "calibration", "calibration_index", "discover", "measure",
           "source_products", "qa_full", "summary", "accuracy", "check"]  # fmt: skip
    assert order == dag


@pytest.mark.parametrize("rule", sorted(r for r, d in RULES.items() if d["script"]))
def test_script_calls_its_rule_function_and_reads_every_param(rule):
    text = RULES[rule]["script"].read_text()
    assert f"rules.{rule}(" in text, f"{RULES[rule]['script'].name} does not call rules.{rule}"
    assert "snakemake.config[" not in text, "scripts pass typed settings, not config entries"
    for name in RULES[rule]["params"]:
        assert f"snakemake.params.{name}" in text, f"rule {rule}: param {name} is never read"
