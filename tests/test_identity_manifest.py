"""Measurement identity and manifests."""

import json
import os

from spxflow.fileio import atomic_path, write_json_atomic
from spxflow.identity import measurement_id, science_config_hash
from spxflow.manifest import verify_manifest, write_manifest
from spxflow.settings import Runtime, Science


def test_measurement_id_depends_only_on_science_inputs():
    h = science_config_hash({"mask": ["HOT"]}, "1.0.3")
    base = measurement_id("M31", "ivo://x?1/D1", 60, h, "1.0.3")
    assert base == measurement_id("M31", "ivo://x?1/D1", 60.0, h, "1.0.9")  # patch level
    assert base != measurement_id("M31", "ivo://x?1/D1", 61, h, "1.0.3")
    assert base != measurement_id("M32", "ivo://x?1/D1", 60, h, "1.0.3")
    assert base != measurement_id("M31", "ivo://x?2/D1", 60, h, "1.0.3")
    assert base != measurement_id("M31", "ivo://x?1/D1", 60, h, "1.1.0")
    h2 = science_config_hash({"mask": ["HOT", "COLD"]}, "1.0.3")
    assert base != measurement_id("M31", "ivo://x?1/D1", 60, h2, "1.0.3")


def test_science_settings_ignore_runtime_knobs():
    a = {"archive": {"backend": "irsa", "irsa": {"collections": ["c"], "timeout_s": 5}}}
    b = {
        "archive": {
            "backend": "irsa",
            "irsa": {"collections": ["c"], "timeout_s": 99, "max_concurrent_per_host": 1},
        },
        "cleanup": "never",
    }
    assert Science.from_config(a).to_params() == Science.from_config(b).to_params()
    assert Runtime.from_config(a) != Runtime.from_config(b)
    assert Runtime.from_config(b).archive["timeout_s"] == 99
    c = {"archive": {"simulated": {"seed": 1, "gzip": True}}}
    archive = Science.from_config(c).to_params()["archive"]
    assert archive["seed"] == 1 and "gzip" not in archive
    assert Runtime.from_config(c).archive == {"gzip": True, "pixels": "window"}
    d = {"photometry": {"fit_half_size_px": 5}}
    assert Science.from_config(d).config_hash != Science.from_config({}).config_hash


def test_science_survives_params_round_trip():
    science = Science.from_config({"photometry": {"mask_flags": ["HOT"]}})
    again = Science.from_params(science.to_params())
    assert again == science and again.config_hash == science.config_hash


def test_manifest_detects_missing_tampered_and_recorded_problems(tmp_path):
    os.chdir(tmp_path)
    f1, f2 = tmp_path / "a.csv", tmp_path / "b.png"
    f1.write_text("x\n1\n")
    f2.write_bytes(b"png")
    m = tmp_path / "m.json"
    write_manifest(
        m,
        source="s",
        files=[str(f1), str(f2)],
        measurement_ids=["1"],
        rows_sha256="r",
        config_hash="c",
        code_version="v",
    )
    assert verify_manifest(m, root=tmp_path) == []
    f1.write_text("x\n2\n")
    f2.unlink()
    status = {p["path"]: p["status"] for p in verify_manifest(m, root=tmp_path)}
    assert status == {"a.csv": "tampered", "b.png": "missing"}
    write_manifest(
        m,
        source="s",
        files=[str(f1)],
        measurement_ids=[],
        rows_sha256="r",
        config_hash="c",
        code_version="v",
        problems=["sed plot failed: boom"],
    )
    assert [p["status"] for p in verify_manifest(m, root=tmp_path)] == ["incomplete"]


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    try:
        with atomic_path(target) as tmp:
            tmp.write_text("{half")
            raise RuntimeError("writer died")
    except RuntimeError:
        pass
    assert list(tmp_path.iterdir()) == []
    write_json_atomic(target, {"b": 1, "a": 2})
    assert json.loads(target.read_text()) == {"a": 2, "b": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
