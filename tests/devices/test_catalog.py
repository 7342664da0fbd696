"""The device catalog: bundled TOML files, user folders (no Python), refusals."""

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeseq.cli.main import app
from edgeseq.devices.catalog import UnknownDeviceError, get_device, load_catalog
from edgeseq.errors import ConfigError

FACTS = Path(__file__).resolve().parents[3] / "shared" / "FACTS.md"
ISSUE_DEVICES = ("jetson-orin-nano", "jetson-orin-nano-super", "jetson-orin-nx-16gb", "jetson-agx-orin-64gb", "jetson-nano",
                 "raspberry-pi-5", "pixel-8", "galaxy-s24", "iphone-15-pro", "host")


def test_bundled_catalog_has_every_device_with_sources():
    cat = load_catalog()
    assert set(ISSUE_DEVICES) <= set(cat)
    for name, d in cat.items():
        assert d.sources, name
        assert d.runtimes, name
        if not d.measured:
            assert d.memory_gb > 0 and d.cpu.peak_gflops("fp32") > 0, name
            # bandwidth either published or said to be missing
            assert d.bandwidth_gbs or any("bandwidth" in n.lower() for n in d.notes), name


def test_catalog_figures_match_the_published_table():
    """Bandwidth and memory as in FACTS.md's device table (from the vendors' pages cited in each TOML)."""
    cat = load_catalog()
    expected = {"jetson-orin-nano": (8, 68.0), "jetson-orin-nano-super": (8, 102.0), "jetson-orin-nx-16gb": (16, 102.4),
                "jetson-agx-orin-64gb": (64, 204.8), "jetson-nano": (4, 25.6), "raspberry-pi-5": (8, 17.0),
                "galaxy-s24": (8, 76.8)}
    for name, (gb, bw) in expected.items():
        assert (cat[name].memory_gb, cat[name].bandwidth_gbs) == (gb, bw), name
    if FACTS.is_file():  # the shared facts sheet, where present
        text = FACTS.read_text()
        for bw in ("68 GB/s", "102.4 GB/s", "204.8 GB/s", "25.6 GB/s"):
            assert bw in text
    # derived per-core peak: clock x FLOPs per cycle (Cortex-A78AE: 16 fp32 per cycle at 1.5 GHz)
    assert cat["jetson-orin-nano"].cpu.peak_gflops("fp32") == pytest.approx(1.5 * 16)
    assert cat["jetson-orin-nano"].peak_gflops("gpu", "int8_sparse") == pytest.approx(40_000)


def test_unknown_device_lists_the_known_ones():
    with pytest.raises(UnknownDeviceError, match="known: .*jetson-orin-nano.*raspberry-pi-5"):
        get_device("jetson-orin-nanoo")
    r = CliRunner().invoke(app, ["devices", "nope"])
    assert r.exit_code == 1 and "unknown device 'nope'" in r.output and "pixel-8" in r.output


def test_adding_a_device_needs_only_a_toml_file(tmp_path, monkeypatch):
    (tmp_path / "my-board.toml").write_text(
        'name = "my-board"\ntitle = "My board"\nmemory_gb = 2\nbandwidth_gbs = 12.8\nsources = ["datasheet"]\n'
        '[cpu]\ncores = 4\ncore = "Cortex-A55"\nclock_ghz = 2.0\nflops_per_cycle = { fp32 = 8 }\n'
        '[runtimes]\nexecutorch = { unit = "cpu" }\n')
    monkeypatch.setenv("EDGESEQ_DEVICES", str(tmp_path))
    d = get_device("my-board")
    assert d.cpu.peak_gflops("fp32") == 16.0 and d.bandwidth_gbs == 12.8
    r = CliRunner().invoke(app, ["devices", "my-board"])
    assert r.exit_code == 0, r.output
    assert "My board" in r.output and "16.0 GFLOP/s" in r.output
    r = CliRunner().invoke(app, ["devices"])
    assert "my-board" in r.output


@pytest.mark.parametrize("text, message", [
    ('name = "bad"\ntitle = "x"\nmemory_gb = 1\n[cpu]\ncores = 1\nclock_ghz = 1\nflops_per_cycle = { fp32 = 8 }\n'
     '[runtimes]\nexecutorch = { unit = "npu" }\n', "runs on unit 'npu'"),
    ('name = "bad"\ntitle = "x"\nmemory_gb = 1\n[cpu]\ncores = 1\nclock_ghz = 1\nflops_per_cycle = { fp64 = 8 }\n'
     '[runtimes]\n', "unknown precision 'fp64'"),
    ('name = "bad"\ntitle = "x"\n[cpu]\n', "missing field 'runtimes'"),
    ('name = "other"\ntitle = "x"\nmemory_gb = 1\n[cpu]\ncores = 1\nclock_ghz = 1\nflops_per_cycle = { fp32 = 8 }\n[runtimes]\n',
     "must match the file name"),
    ('name = "bad\n', "not valid TOML"),
])
def test_malformed_device_files_are_refused_in_one_line(tmp_path, text, message):
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)) as exc:
        load_catalog([tmp_path])
    assert "\n" not in str(exc.value)
