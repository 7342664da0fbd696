"""``edgeseq profile``: a measured profile of real artifacts, the report schema, estimates, refusals."""

import json
import shutil

import jsonschema
import numpy as np
import pytest
from typer.testing import CliRunner

import edgeseq
from edgeseq.cli.main import app
from edgeseq.devices.catalog import load_catalog
from edgeseq.devices.report import schema

STEPS = 600  # as in conftest.py


def test_report_matches_its_schema_and_keeps_raw_samples(report):
    assert report["steps"] == STEPS
    r = report["json"]
    jsonschema.validate(r, schema())
    assert [(p["artifact"]["runtime"], p["artifact"]["quantization"]) for p in r["profiles"]] == [
        ("executorch", None), ("onnxruntime", None), ("executorch", "int8-dynamic")]
    for p in r["profiles"]:
        s = np.array(p["latency"]["samples_us"])
        assert len(s) == STEPS and (s > 0).all()
        # percentiles recomputed from the raw samples
        assert p["latency"]["p50_us"] == pytest.approx(np.percentile(s, 50), rel=1e-3)
        assert p["latency"]["p99_us"] == pytest.approx(np.percentile(s, 99), rel=1e-3)
        assert p["latency"]["cv"] == pytest.approx(s.std() / s.mean(), rel=1e-3)
        assert p["memory"]["state_bytes_per_stream"] == 2 * 2 * 16 * 4  # h and c, 2 layers x 16 floats
        assert p["memory"]["rss_along_stream"][-1][0] == STEPS
        assert p["load"]["first_load_ms"] > 0 and p["throughput"]["streams"] == 2


def test_schema_rejects_a_broken_report(report):
    bad = json.loads(json.dumps(report["json"]))
    del bad["profiles"][0]["latency"]["samples_us"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema())
    bad = json.loads(json.dumps(report["json"]))
    bad["estimates"][0]["label"] = "measured"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema())


def test_memory_is_flat_and_said_in_words(report):
    for p in report["json"]["profiles"]:
        assert p["memory"]["flat"] is True, p["memory"]["statement"]
        assert p["memory"]["statement"].startswith("Memory is flat along the stream")
    assert "Memory is flat along the stream" in (report["dir"] / "report.md").read_text()
    assert "Memory is flat along the stream" in (report["dir"] / "report.html").read_text()


def test_parity_beside_the_speed_against_the_eager_model(report, artifacts, int8_artifact):
    x = np.random.default_rng(0).standard_normal((300, 5)).astype(np.float32)  # profile's seeded N(0, 1) inputs
    eager = edgeseq.open(report["ref"]).run(x)
    for p, path in zip(report["json"]["profiles"], (artifacts["executorch"].path, artifacts["onnx"].path, int8_artifact.path)):
        par = p["parity"]
        assert par["steps"] == 300
        independent = float(np.abs(edgeseq.open(path).run(x) - eager).max())
        assert par["max_abs_error"] == pytest.approx(independent, rel=1e-6, abs=1e-9)
    fp32, onnx, int8 = (p["parity"] for p in report["json"]["profiles"])
    assert fp32["same_model"] and onnx["same_model"] and fp32["max_abs_error"] < 1e-4 and onnx["max_abs_error"] < 1e-4
    # the int8 artifact against the float model: a different fingerprint, reported as drift, larger than fp32's
    assert not int8["same_model"] and "drift" in int8["what"]
    assert 1e-4 < int8["max_abs_error"] < 0.2


def test_side_by_side_comparison(report):
    r = report["json"]
    assert [c["file"] for c in r["comparison"]] == [p["artifact"]["file"] for p in r["profiles"]]
    labels = [c["label"] for c in r["comparison"]]
    assert labels[2].endswith("(executorch, int8-dynamic)")
    for c, p in zip(r["comparison"], r["profiles"]):
        assert c["p50_us"] == p["latency"]["p50_us"] and c["bytes"] == p["artifact"]["bytes"]
    assert r["comparison"][2]["bytes"] < 0.75 * r["comparison"][0]["bytes"]  # int8 weights (plus the program itself)
    # the int8 artifact's estimates use the devices' int8 peaks
    e = next(e for e in r["estimates"] if e["artifact"] == r["profiles"][2]["artifact"]["file"] and e["device"] == "raspberry-pi-5")
    assert e["precision"] == "int8" and e["peak_gflops"] == pytest.approx(2.4 * 64)
    html = (report["dir"] / "report.html").read_text()
    assert "measured p50 per step, side by side" in html and "int8-dynamic" in html


def test_per_operator_breakdown_from_each_runtime(report):
    et, ort, et8 = (p["operators"] for p in report["json"]["profiles"])
    assert et8["available"] and any("QD8" in r["name"] or "QC8" in r["name"] for r in et8["rows"]), [r["name"] for r in et8["rows"]]
    assert et["available"] and "ETDump" in et["source"] and et["rows"]
    assert any("Fully Connected" in r["name"] for r in et["rows"])  # XNNPACK's GEMM kernels
    assert ort["available"] and {"Gemm", "MatMul"} & {r["op_type"] for r in ort["rows"]}
    assert sum(r["share"] for r in ort["rows"]) == pytest.approx(1.0)
    assert all(r["count"] == 30 for r in ort["rows"])  # one event per node per step
    assert ort["arena_held_bytes"] > 0


def test_estimates_are_labelled_and_follow_the_catalog(report):
    r = report["json"]
    host = r["host"]["measurements"]
    cat = load_catalog()
    ests = {(e["artifact"], e["device"]): e for e in r["estimates"]}
    assert len(ests) == 3 * 3
    for p in r["profiles"][:2]:  # float32 artifacts: the fp32 peaks
        for name in ("jetson-orin-nano", "raspberry-pi-5"):
            e = ests[(p["artifact"]["file"], name)]
            assert e["label"] == "estimate" and e["available"]
            d = cat[name]
            # recompute from the catalog, the host measurement and the measured p50
            b = e["bytes_per_step"]
            dev = max(b / (d.bandwidth_gbs * 1e9), e["flops_per_step"] / (d.cpu.peak_gflops("fp32") * 1e9))
            hst = max(b / (host["bandwidth_gbs"] * 1e9), e["flops_per_step"] / (host["core_fp32_gflops"] * 1e9))
            ratio = max(dev / hst, host["core_fp32_gflops"] / d.cpu.peak_gflops("fp32"))
            assert e["p50_us"] == pytest.approx(p["latency"]["p50_us"] * ratio, rel=1e-2)
    # the Jetson Nano (JetPack 4.6) lists no ExecuTorch: not estimated, with the reason
    e = ests[(r["profiles"][0]["artifact"]["file"], "jetson-nano")]
    assert not e["available"] and "lists no executorch" in e["reason"]
    md = (report["dir"] / "report.md").read_text()
    assert "(estimate)" in md and "not measured" in md


def test_html_is_self_contained_with_every_plot(report):
    html = (report["dir"] / "report.html").read_text()
    for banned in ("<script", "src=", "href=", "@import", "url("):
        assert banned not in html
    # 3 artifacts x (histogram, latency along the stream, memory vs length, operators) + side by side + devices
    assert html.count("<svg") == 3 * 4 + 2
    for title in ("step latency", "latency along the stream", "memory vs stream length", "per operator",
                  "measured p50 per step, side by side", "devices estimated"):
        assert title in html


def test_refusals_write_nothing(artifacts, tmp_path):
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["profile", str(artifacts["onnx"].path), "--device", "jetson-orin-nanoo", "--out", str(out)])
    assert r.exit_code == 1 and "unknown device 'jetson-orin-nanoo'" in r.output and "raspberry-pi-5" in r.output
    assert not out.exists()
    # an artifact without its manifest
    lone = tmp_path / "lone.onnx"
    shutil.copy(artifacts["onnx"].path, lone)
    r = CliRunner().invoke(app, ["profile", str(lone), "--out", str(out)])
    assert r.exit_code == 1 and "no manifest beside it" in r.output and not out.exists()
    # a manifest that fails validation
    bad = tmp_path / "bad.onnx"
    shutil.copy(artifacts["onnx"].path, bad)
    m = json.loads(artifacts["onnx"].manifest_path.read_text())
    del m["state_spec"]
    (tmp_path / "bad.onnx.edgeseq.json").write_text(json.dumps(m))
    r = CliRunner().invoke(app, ["profile", str(bad), "--out", str(out)])
    assert r.exit_code == 1 and "manifest lacks state_spec" in r.output and not out.exists()
    # a model file that is not the one its manifest describes
    swapped = tmp_path / "swapped.onnx"
    swapped.write_bytes(artifacts["onnx"].path.read_bytes()[:-10])
    m = json.loads(artifacts["onnx"].manifest_path.read_text())
    m["file"] = "swapped.onnx"
    (tmp_path / "swapped.onnx.edgeseq.json").write_text(json.dumps(m))
    r = CliRunner().invoke(app, ["profile", str(swapped), "--out", str(out)])
    assert r.exit_code == 1 and "does not match its manifest" in r.output and not out.exists()
