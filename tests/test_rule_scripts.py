"""Each rule's script calls the ``spxflow.rules`` function named after the rule and reads
every param the rule declares (params that nothing reads would only trigger reruns)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from spxflow import rules

REPO = Path(__file__).resolve().parents[1]
_RULE = re.compile(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", re.MULTILINE)


def declared_rules() -> dict[str, dict]:
    out = {}
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for m in _RULE.finditer(smk.read_text()):
            body = m.group(2)
            script = re.search(r'script:\n\s+"([^"]+)"', body)
            params = re.search(r"\n    params:\n((?:        .*\n)+)", body)
            out[m.group(1)] = {
                "script": (smk.parent / script.group(1)).resolve() if script else None,
                "params": re.findall(r"^        (\w+)=", params.group(1), re.M) if params else [],
            }
    return out


RULES = declared_rules()


def test_rules_module_has_one_function_per_rule_in_dag_order():
    functions = [
        name
        for name, f in inspect.getmembers(rules, inspect.isfunction)
        if f.__module__ == rules.__name__ and not name.startswith("_")
    ]
    assert sorted(functions) == sorted(r for r, d in RULES.items() if d["script"])
    order = [name for name in rules.__dict__ if name in functions]
    dag = ["validate_catalog", "calibration", "calibration_index", "measure", "source_products",
           "qa_full", "summary", "accuracy", "check"]  # fmt: skip
    assert order == dag


@pytest.mark.parametrize("rule", sorted(r for r, d in RULES.items() if d["script"]))
def test_script_calls_its_rule_function_and_reads_every_param(rule):
    text = RULES[rule]["script"].read_text()
    assert f"rules.{rule}(" in text, f"{RULES[rule]['script'].name} does not call rules.{rule}"
    assert "snakemake.config[" not in text, "scripts pass typed settings, not config entries"
    for name in RULES[rule]["params"]:
        assert f"snakemake.params.{name}" in text, f"rule {rule}: param {name} is never read"
