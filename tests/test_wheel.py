"""The built wheel carries every subpackage (sibling folders mapped into the edgeseq namespace) and the data."""

import os
import pathlib
import subprocess
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_wheel_imports_every_subpackage_outside_the_source_tree(tmp_path):
    import shutil

    src = tmp_path / "src"  # build from a copy: setuptools leaves build/ behind, and a stale one would leak into wheels
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("edgeseq", "exporters", "runtimes", "quant", "devices"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(src)],
        check=True, cwd=tmp_path, timeout=600,
    )
    (whl,) = wheels.glob("edgeseq-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    assert "edgeseq/data/japanese_vowels.npz" in names
    assert "edgeseq/devices/catalog/jetson-orin-nano.toml" in names and "edgeseq/devices/report.schema.json" in names
    assert "edgeseq/exporters/onnx.py" in names and "edgeseq/runtimes/session.py" in names
    assert not any(n.startswith(("exporters/", "runtimes/", "tests/")) for n in names)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(whl)], check=True, timeout=600)
    code = (
        "import edgeseq, edgeseq.exporters, edgeseq.runtimes, edgeseq.quant, edgeseq.devices, edgeseq.models, edgeseq.graph, edgeseq.stream, edgeseq.cli.main;"
        "import pathlib;"
        f"assert pathlib.Path(edgeseq.__file__).is_relative_to({str(target)!r}), edgeseq.__file__;"
        f"assert pathlib.Path(edgeseq.exporters.__file__).is_relative_to({str(target)!r});"
        "from edgeseq.data import load_dataset; assert len(load_dataset('japanese-vowels').train) == 270;"
        "from edgeseq.devices.catalog import load_catalog; assert 'raspberry-pi-5' in load_catalog();"
        "from edgeseq.devices.report import schema; assert schema()['title'];"
        "print(sorted(edgeseq.exporters.EXPORTERS.keys()), sorted(edgeseq.runtimes.RUNTIMES.keys()))"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "['executorch', 'onnx', 'tensorrt'] ['executorch', 'native', 'onnxruntime', 'torch']" in r.stdout
