"""Data files that lie about their size (edgeseq.data.sizes): an .npy header or an .npz member that claims more
than the file holds is refused in one line naming the file and both sizes before anything is allocated, through
edgeseq.data.load, the stream reader and a saved stream state; what would not fit in memory is refused the same way.
(The CLI cases, train and stream, are in tests/test_cli_bad_inputs.py.)"""

from __future__ import annotations

import resource
import zipfile

import numpy as np
import pytest

from edgeseq.data import load
from edgeseq.data import sizes
from edgeseq.errors import InputError, StateMismatchError


def lying_npy(path, shape=(100_000, 100_000, 12)):
    """A .npy header claiming ``shape`` float32, followed by 64 bytes."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
        f.write(b"\0" * 64)
    return path


def lying_npz(path):
    """An .npz whose x.npy claims (1000, 1000, 12000) float32 (44.7 GiB) over 1 MiB of data (honestly recorded)."""
    import io

    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f4", "fortran_order": False, "shape": (1000, 1000, 12000)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x.npy", head.getvalue() + b"\0" * (1 << 20))
        zf.writestr("y.npy", _npy_bytes(np.zeros(1000, np.int64)))
    return path


def _npy_bytes(a):
    import io

    b = io.BytesIO()
    np.save(b, a)
    return b.getvalue()


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def test_an_npy_header_claiming_447_gib_over_64_bytes_is_refused_before_allocating(tmp_path):
    path = lying_npy(tmp_path / "bomb.npy")
    assert path.stat().st_size < 256
    before = _peak_rss()
    with pytest.raises(InputError, match=r"bomb\.npy: its header claims \(100000, 100000, 12\) float32 \(447\.0 GiB\), "
                                         r"but the file holds 64 bytes of data"):
        load(path)
    assert _peak_rss() - before < 64 << 20  # nothing of the claim was allocated


def test_an_npz_member_claiming_more_than_its_zip_entry_is_refused(tmp_path):
    path = lying_npz(tmp_path / "bomb.npz")
    with pytest.raises(InputError, match=r"bomb\.npz member x\.npy: its header claims \(1000, 1000, 12000\) float32 "
                                         r"\(44\.7 GiB\), but its zip entry records 1\.0 MiB of data"):
        load(path)


def test_honest_files_pass_and_their_sizes_are_read_from_the_headers(tmp_path):
    a = np.random.default_rng(0).standard_normal((3, 50, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", a)
    np.savez_compressed(tmp_path / "d.npz", x=a, y=np.array([0, 1, 0]))
    assert sizes.check_npy(tmp_path / "x.npy") == ((3, 50, 4), np.dtype("float32"))
    assert sizes.check_npz(tmp_path / "d.npz") == {"x": ((3, 50, 4), np.dtype("float32")), "y": ((3,), np.dtype("int64"))}
    ds = load(tmp_path / "d.npz")
    assert ds.d_in == 4


def test_what_would_not_fit_in_the_memory_limit_is_refused_naming_both(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((100, 10), np.float64))  # 8,000 bytes of data
    with pytest.raises(InputError, match=r"x\.npy: reading it takes 7\.8 KiB, more than the limit given \(1000 bytes\)"):
        sizes.check_npy(tmp_path / "x.npy", max_memory=1000)
    avail = sizes.available_memory()
    assert avail is None or avail > 0
    path = lying_npy(tmp_path / "fits.npy", shape=(1 << 40,))  # the header matches no file; the size check comes first
    with pytest.raises(InputError, match="the file holds 64 bytes"):
        sizes.check_npy(path)


def test_the_stream_reader_and_a_saved_state_refuse_lying_files(tmp_path):
    from edgeseq.cli.stream import read_stream
    from edgeseq.runtimes.session import StreamState

    with pytest.raises(InputError, match=r"bomb\.npy: its header claims"):
        read_stream(lying_npy(tmp_path / "bomb.npy"))
    with pytest.raises(StateMismatchError, match=r"not an edgeseq state file: .*bomb\.npz member x\.npy: its header claims"):
        StreamState.load(lying_npz(tmp_path / "bomb.npz"))




def test_stream_reads_a_long_npy_in_chunks_in_flat_memory(tmp_path):
    """`edgeseq stream --input`: 64 MiB of frames peak within 24 MiB of 1 MiB of them (read whole and converted, the
    input alone would add 128 MiB); the outputs equal a session fed the same frames."""
    from cli_rss import stream_peak  # tests/cli_rss.py
    from extras import need  # tests/extras.py

    need("onnxruntime", "onnx")
    import edgeseq

    d_in = 4096
    model = edgeseq.build("rnn", d_in=d_in, d_out=2, d_hidden=4)
    art = edgeseq.export(edgeseq.convert(model), tmp_path / "wide", target="onnx", steps=20)
    rng = np.random.default_rng(0)
    peaks = {}
    for name, frames in (("small", 64), ("big", 4096)):  # 1 MiB and 64 MiB of float32
        np.save(tmp_path / f"{name}.npy", rng.standard_normal((frames, d_in)).astype(np.float32))
        peaks[name] = stream_peak(art.path, tmp_path / f"{name}.npy", tmp_path / f"{name}_y.npy", timeout=600)
    assert peaks["big"] - peaks["small"] < 24 << 20, peaks
    x = np.load(tmp_path / "big.npy")
    sess = edgeseq.open(art.path)
    ref = np.stack([sess.push(f) for f in x[:300]])
    np.testing.assert_array_equal(np.load(tmp_path / "big_y.npy")[:300], ref)


@pytest.mark.parametrize("text,expected", [("1000", 1000), ("512MiB", 512 << 20), ("2G", 2 << 30), ("1.5GB", 1_500_000_000),
                                           ("64 kib", 64 << 10)])
def test_max_memory_sizes_are_read_as_users_write_them(text, expected):
    assert sizes.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1G", "2 parsecs", "0"])
def test_a_max_memory_that_is_no_size_is_refused(text):
    with pytest.raises(InputError, match="--max-memory .*expected a size such as 512MiB"):
        sizes.parse_size(text)


def _table(path, rows=400):
    rng = np.random.default_rng(0)
    with open(path, "w") as f:
        f.write("series,a,b,label\n")
        for i in range(rows):
            f.write(f"{i // 40},{rng.standard_normal():.6f},{rng.standard_normal():.6f},{(i // 40) % 2}\n")
    return path


def test_a_table_that_would_not_fit_the_limit_is_refused_before_it_is_read(tmp_path):
    from edgeseq.data.files import DataOptions

    path = _table(tmp_path / "t.csv")
    size = path.stat().st_size
    need = size * sizes.TEXT_BYTES_PER_BYTE
    with pytest.raises(InputError, match=rf"t\.csv \({sizes.human(size)} of text\): reading it takes "
                                         rf"{sizes.human(need)}, more than the limit given \(1000 bytes\)"):
        load(str(path), DataOptions(max_memory=1000))
    assert len(load(str(path), DataOptions(max_memory=need)).train) > 0  # the same file within the limit reads


def test_a_folder_is_charged_all_its_files_before_any_is_read(tmp_path):
    from edgeseq.data.files import DataOptions

    for i in range(3):
        (tmp_path / "d" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / "d" / f"c{i % 2}" / f"s{i}.npy", np.zeros((100, 4), np.float32))  # 1,600 bytes each
    with pytest.raises(InputError, match=r"d \(3 files\): reading it takes 4\.7 KiB, more than the limit given"):
        load(str(tmp_path / "d"), DataOptions(max_memory=4000))
    ds = load(str(tmp_path / "d"), DataOptions(max_memory=5000))  # within the limit: read, one class per sub-folder
    assert sorted(ds.classes) == ["c0", "c1"]


def test_a_parquet_footer_that_claims_more_than_the_file_holds_is_refused(tmp_path):
    from extras import need  # tests/extras.py

    need("pyarrow", "parquet")
    import pandas as pd

    rng = np.random.default_rng(0)
    path = tmp_path / "t.parquet"
    pd.DataFrame({"a": rng.standard_normal(20_000), "b": rng.standard_normal(20_000)}).to_parquet(path)
    data = path.read_bytes()
    cut = tmp_path / "cut.parquet"  # 100 KB taken out of its data: the footer (at the end) still lists them
    cut.write_bytes(data[:4] + data[4 + 100_000:])
    with pytest.raises(InputError, match=rf"cut\.parquet: its footer claims 20,000 rows in column chunks of .* but the "
                                         rf"file holds {sizes.human(len(data) - 100_000)}"):
        load(str(cut))
    sizes.check_parquet(path)  # the whole file passes
    with pytest.raises(InputError, match=r"t\.parquet \(20,000 rows x 2 columns\): reading it takes .* more than the limit"):
        sizes.check_parquet(path, max_memory=1 << 20)


def test_the_cli_refuses_data_past_max_memory_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from edgeseq.cli.main import app

    np.savez(tmp_path / "d.npz", x=np.zeros((20, 50, 3), np.float32), y=np.arange(20) % 2)
    r = CliRunner().invoke(app, ["train", "--family", "rnn", "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "m"),
                                 "--max-memory", "4KiB"])
    assert r.exit_code == 1, r.output
    assert "d.npz: reading it takes 11.9 KiB, more than the limit given (4.0 KiB)" in " ".join(r.output.split())
    assert not (tmp_path / "m").exists()
    r = CliRunner().invoke(app, ["train", "--family", "rnn", "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "m"),
                                 "--max-memory", "lots"])
    assert r.exit_code == 1 and "--max-memory 'lots'" in r.output


def test_stream_refuses_a_csv_input_past_max_memory_before_streaming(tmp_path):
    from extras import need  # tests/extras.py

    need("onnxruntime", "onnx")
    from typer.testing import CliRunner

    import edgeseq
    from edgeseq.cli.main import app

    art = edgeseq.export(edgeseq.convert(edgeseq.build("rnn", d_in=2, d_out=1, d_hidden=4)), tmp_path / "m",
                         target="onnx", steps=20)
    np.savetxt(tmp_path / "x.csv", np.zeros((100, 2)), delimiter=",")
    args = ["stream", str(art.path), "--input", str(tmp_path / "x.csv"), "--output", str(tmp_path / "y.npy")]
    r = CliRunner().invoke(app, [*args, "--max-memory", "1KiB"])
    assert r.exit_code == 1 and "x.csv" in r.output and "more than the limit given (1.0 KiB)" in " ".join(r.output.split())
    assert not (tmp_path / "y.npy").exists()
    r = CliRunner().invoke(app, [*args, "--max-memory", "10MiB"])
    assert r.exit_code == 0, r.output
    assert np.load(tmp_path / "y.npy").shape == (100, 1)


# ------------------------------------------------------------------------------ what only the header is needed for
def _never_read(monkeypatch):
    """Make every whole read of a data file fail: a refusal that comes first came from the header alone."""
    import csv

    import pandas as pd

    import edgeseq.data.files as files

    def boom(*_a, **_k):
        raise AssertionError("the data was read")

    monkeypatch.setattr(files.np, "load", boom)
    reader = csv.reader  # the header row alone is parsed from a list of one line; a file given whole is a read
    monkeypatch.setattr(files.csv, "reader", lambda f, *a, **k: boom() if not isinstance(f, list) else reader(f, *a, **k))
    monkeypatch.setattr(pd, "read_parquet", boom)


def test_an_npz_of_honest_zeros_without_labels_is_refused_for_training_before_it_is_read(tmp_path, monkeypatch):
    """The issue's case: a small .npz that honestly decompresses to a large x and has no y, given to train."""
    path = tmp_path / "zeros.npz"
    np.savez_compressed(path, x=np.zeros((200, 1000, 25), np.float32))  # 20 MiB of zeros in ~20 KiB
    assert path.stat().st_size < 1 << 20
    _never_read(monkeypatch)
    with pytest.raises(InputError, match=r"zeros\.npz: no labels \(no y array among its members \(x\)\), and training "
                                         r"needs them .*nothing was read"):
        load(path, labels_for="training")
    with pytest.raises(InputError, match=r"zeros\.npz: 25 features per frame \(from its header, \(200, 1000, 25\)\); "
                                         r"the model takes 12; nothing was read"):
        load(path, d_in=12)


def test_an_npy_and_a_folder_without_labels_and_a_wrong_width_are_refused_from_their_headers(tmp_path, monkeypatch):
    np.save(tmp_path / "one.npy", np.zeros((50, 7), np.float32))
    (tmp_path / "series").mkdir()
    for i in range(3):
        np.save(tmp_path / "series" / f"s{i}.npy", np.zeros((10, 7), np.float32))
    np.save(tmp_path / "text.npy", np.array([["a"] * 7] * 5))
    _never_read(monkeypatch)
    with pytest.raises(InputError, match=r"one\.npy: no labels \(an \.npy holds one array and no labels\)"):
        load(tmp_path / "one.npy", labels_for="training")
    with pytest.raises(InputError, match=r"one\.npy: 7 features per frame \(from its header, \(50, 7\)\); the model takes 5"):
        load(tmp_path / "one.npy", d_in=5)
    with pytest.raises(InputError, match=r"series: no labels \(no labels\.csv, and not every series in a sub-folder"):
        load(tmp_path / "series", labels_for="the model's classify metric")
    with pytest.raises(InputError, match=r"s0\.npy: 7 features per frame"):
        load(tmp_path / "series", d_in=5)
    with pytest.raises(InputError, match=r"text\.npy: its header gives values of type <U1; expected real numbers"):
        load(tmp_path / "text.npy")


def test_a_table_without_its_label_column_or_of_another_width_is_refused_from_its_header_row(tmp_path, monkeypatch):
    pytest.importorskip("pyarrow", reason="the parquet extra")  # installed by .[all]: present wherever CI runs
    import pandas as pd

    rows = "series,time,a,b,c\n" + "".join(f"s{i % 4},{i},1,2,3\n" for i in range(400))
    (tmp_path / "t.csv").write_text(rows)
    df = pd.DataFrame({"series": [f"s{i % 4}" for i in range(400)], "time": range(400), "a": 1.0, "b": 2.0, "c": 3.0})
    df.to_parquet(tmp_path / "t.parquet")
    _never_read(monkeypatch)
    for name in ("t.csv", "t.parquet"):
        with pytest.raises(InputError, match=rf"{name}: no labels \(no 'label' column among series, time, a, b, c\), "
                                             r"and training needs them \(--label-col names it\); nothing was read"):
            load(tmp_path / name, labels_for="training")
        with pytest.raises(InputError, match=rf"{name}: 3 feature columns \(every column but the series, time, label "
                                             r"and split ones, from its header\); the model takes 12"):
            load(tmp_path / name, d_in=12)
    monkeypatch.undo()
    ds = load(tmp_path / "t.csv", d_in=3)  # the header agrees: read as before
    assert (ds.d_in, ds.task, len(ds.train) + len(ds.test)) == (3, "unlabeled", 4)


def test_train_refuses_unlabeled_data_in_one_line_before_reading_it(tmp_path):
    from typer.testing import CliRunner

    from edgeseq.cli.main import app

    np.savez_compressed(tmp_path / "zeros.npz", x=np.zeros((100, 500, 12), np.float32))
    r = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "zeros.npz"), "--out", str(tmp_path / "m")])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "zeros.npz: no labels (no y array among its members (x)), and training needs them" in " ".join(r.output.split())
    assert not (tmp_path / "m").exists()


_PROFILE_RSS = r"""
import sys, warnings
warnings.simplefilter("ignore")
from edgeseq.devices.profiler import ProfileConfig, make_inputs
x, what = make_inputs({"inputs": [{"shape": [1, int(sys.argv[2])]}]}, ProfileConfig(data=sys.argv[1]), int(sys.argv[3]))
print("FIRST", float(x[0, 0]), float(x[-1, -1]), x.shape[0], what["what"])
print("peak", [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")][0])
"""


def test_profile_input_reads_the_frames_it_needs_of_a_long_npy_in_flat_memory(tmp_path):
    """`profile --input long.npy`: 1,000 frames of a 128 MiB recording peak within 24 MiB of a 1 MiB one, and are
    its first 1,000 frames (a recording shorter than the steps is repeated, as any data set is)."""
    import subprocess
    import sys

    d_in = 4096
    rng = np.random.default_rng(0)
    peaks = {}
    for name, frames in (("small", 64), ("big", 8192)):
        x = rng.standard_normal((frames, d_in)).astype(np.float32)
        np.save(tmp_path / f"{name}.npy", x)
        r = subprocess.run([sys.executable, "-c", _PROFILE_RSS, str(tmp_path / f"{name}.npy"), str(d_in), "1000"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        first = r.stdout.split("FIRST")[-1].split()
        last_frame = x[min(999, frames - 1) if frames >= 1000 else 999 % frames]
        assert (float(first[0]), float(first[1]), int(first[2])) == (float(x[0, 0]), float(last_frame[-1]), 1000)
        peaks[name] = int(r.stdout.split("peak")[-1])
    assert peaks["big"] - peaks["small"] < 24 << 20, peaks


# ------------------------------------------------------------------------ a saved state, a manifest, an archive
def _esst(dims, data: bytes) -> bytes:
    import struct

    fp = b"f" * 8
    return (b"ESST" + struct.pack("<II", 1, len(fp)) + fp + struct.pack("<qI", 0, 1) + struct.pack("<I", 1) + b"h"
            + struct.pack("<II", 0, len(dims)) + struct.pack(f"<{len(dims)}q", *dims) + data)


@pytest.mark.parametrize("dims,match", [
    ((1000, 1000, 1000), r"tensor 'h' claims \(1000, 1000, 1000\) float32 \(3\.7 GiB\), but the file holds 64 bytes "
                         r"after its header: truncated"),
    ((2 ** 40, 2 ** 40), r"tensor 'h' claims \(1099511627776, 1099511627776\) float32 \(.* TiB\)"),  # past int64: no wrap to < 0
    ((-4, 4), r"tensor 'h' claims shape \(-4, 4\)"),
], ids=["3.7-GiB-over-64-bytes", "past-int64", "negative"])
def test_a_state_file_whose_header_claims_more_than_it_holds_is_refused_naming_both(tmp_path, dims, match):
    from edgeseq.runtimes.session import StreamState

    path = tmp_path / "s.esstate"
    path.write_bytes(_esst(dims, b"\0" * 64))
    with pytest.raises(StateMismatchError, match=r"s\.esstate: not an edgeseq state file \(" + match):
        StreamState.load(path)
    StreamState.from_bytes(_esst((4, 4), b"\0" * 64))  # the same layout, honest: read


def test_a_manifest_or_config_past_what_such_a_file_holds_is_refused_before_parsing(tmp_path):
    from edgeseq import manifest
    from edgeseq.checkpoint import read_config
    from edgeseq.errors import ArtifactError, ConfigError

    big = tmp_path / "a.onnx.edgeseq.json"
    with open(big, "w") as f:  # valid JSON, 17 MiB
        f.write('{"pad": "' + "x" * (17 << 20) + '"}')
    with pytest.raises(ArtifactError, match=r"a\.onnx\.edgeseq\.json: 17\.0 MiB, but a manifest is at most 16\.0 MiB"):
        manifest.read(big)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_bytes(big.read_bytes())
    with pytest.raises(ConfigError, match=r"config\.json: 17\.0 MiB, but a config\.json is at most 16\.0 MiB"):
        read_config(tmp_path / "m")


def test_an_archive_whose_directory_claims_more_than_it_holds_is_refused_before_loading(tmp_path):
    import torch

    from edgeseq.errors import ConfigError
    from edgeseq.graph.pt2 import check_archive

    class Lin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.f = torch.nn.Linear(3, 2)

        def forward(self, x):
            return self.f(x)

    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(Lin(), (torch.randn(1, 4, 3),)), path)
    check_archive(path)  # the archive as saved passes
    data = bytearray(path.read_bytes())
    end = data.rfind(b"PK\x05\x06")  # the end record gives where the directory starts (members hold zips of their own)
    at = int.from_bytes(data[end + 16:end + 20], "little")  # the first member's entry: its compressed size at +20
    assert data[at:at + 4] == b"PK\x01\x02"
    data[at + 20:at + 24] = (0x7FFFFFF0).to_bytes(4, "little")
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"bad\.pt2: member .* claims 2\.0 GiB at offset \d+, but the archive holds "
                                          r".*: it is truncated or its directory is wrong"):
        check_archive(bad)
