"""A user's own data files (edgeseq.data.load): every format read back to the arrays that were written, and every
command that takes data run on a user's .npz, .csv and folder with results equal to passing the same arrays in
Python."""

import csv
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import edgeseq
from edgeseq.cli.main import app
from edgeseq.data import SequenceDataset, Split, load
from edgeseq.data.files import DataOptions
from edgeseq.train import TrainConfig, fit

runner = CliRunner()
CLASSES = ["high", "low", "mid", "top"]  # sorted: the ids a CSV's class names get


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def arrays():
    """40 variable-length series (T 8..19, 5 features), a class 0..3 each, and a fixed train/test mark."""
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((int(rng.integers(8, 20)), 5)).astype(np.float32) for _ in range(40)]
    ys = np.array([int(x[:, 0].mean() > 0) + 2 * int(x[:, 1].mean() > 0) for x in xs])
    for x, y in zip(xs, ys):
        x += np.float32(0.5 * y)
    test = np.arange(40) % 5 == 0
    return xs, ys, test


def _write_npz(path, xs, ys, test):
    np.savez(path, **{f"x_{i}": x for i, x in enumerate(xs)}, y=ys, split=np.where(test, "test", "train"))
    return path


def _write_csv(path, xs, ys, test, delim=","):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter=delim)
        w.writerow(["series", "time", "f0", "f1", "f2", "f3", "f4", "label", "split"])
        for i, (x, y, t) in enumerate(zip(xs, ys, test)):
            for k, row in enumerate(x):
                w.writerow([f"id{i:02d}", k * 10, *[repr(float(v)) for v in row], CLASSES[y],
                            "test" if t else "train"])
    return path


def _write_folder(root, xs, ys, test):
    # labels from labels.csv, the files in two sub-folders (the folder names are not the classes here)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "labels.csv", "w") as f:
        f.write("file,label\n")
        for i, (x, y) in enumerate(zip(xs, ys)):
            rel = f"{'a' if i % 2 else 'b'}/s{i:02d}.npy"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            np.save(root / rel, x)
            f.write(f"{rel},{y}\n")
    return root


def _by_hand(xs, ys, test) -> SequenceDataset:
    """The same arrays as a SequenceDataset built without the loader (the reference)."""

    def split(mask):
        idx = np.flatnonzero(mask)
        lengths = np.array([len(xs[i]) for i in idx])
        x = np.zeros((len(idx), lengths.max(), 5), np.float32)
        for j, i in enumerate(idx):
            x[j, : len(xs[i])] = xs[i]
        return Split(x, lengths, ys[idx].astype(np.int64))

    return SequenceDataset("by-hand", "classify", 5, 4, split(~test), split(test))


def _same(a: SequenceDataset, b: SequenceDataset):
    assert (a.task, a.d_in, a.d_out) == (b.task, b.d_in, b.d_out)
    for s, t in ((a.train, b.train), (a.test, b.test)):
        np.testing.assert_array_equal(s.lengths, t.lengths)
        np.testing.assert_array_equal(s.y, t.y)
        np.testing.assert_allclose(s.x, t.x, rtol=0, atol=1e-6)


def test_every_format_reads_back_the_arrays(arrays, tmp_path):
    xs, ys, test = arrays
    ref = _by_hand(xs, ys, test)
    _same(load(_write_npz(tmp_path / "d.npz", xs, ys, test)), ref)
    # the split as separate arrays (x_train, y_train, x_test, y_test), padded with lengths
    part = {}
    for name, mask in (("train", ~test), ("test", test)):
        sp = ref.train if name == "train" else ref.test
        part.update({f"x_{name}": sp.x, f"lengths_{name}": sp.lengths, f"y_{name}": sp.y})
    np.savez(tmp_path / "parts.npz", **part)
    _same(load(tmp_path / "parts.npz"), ref)
    csv_ds = load(_write_csv(tmp_path / "d.csv", xs, ys, test))
    _same(csv_ds, ref)
    assert csv_ds.classes == CLASSES and csv_ds.features == ["f0", "f1", "f2", "f3", "f4"]
    _same(load(_write_csv(tmp_path / "d.tsv", xs, ys, test, delim="\t")), ref)
    folder = _write_folder(tmp_path / "folder", xs, ys, test)
    got = load(folder)  # no split in a folder: made with a seed, 20% test
    assert got.task == "classify" and len(got.train) + len(got.test) == 40 and len(got.test) == 8
    assert "seed 0" in got.note
    # (N, T, C) with lengths, and per-step targets: a sequence task
    x = np.zeros((3, 6, 2), np.float32)
    x[:, :, 0] = np.arange(6)
    y = np.cumsum(x, axis=1)[..., :1]
    np.savez(tmp_path / "seq.npz", x=x, lengths=np.array([6, 4, 5]), y=y, split=np.array(["train", "train", "test"]))
    seq = load(tmp_path / "seq.npz")
    assert seq.task == "sequence" and seq.d_out == 1 and seq.train.lengths.tolist() == [6, 4]
    assert (seq.train.x[1, 4:] == 0).all()  # padding after the series' end, not data
    np.testing.assert_array_equal(seq.test.y[0, :, 0], y[2, :5, 0])
    # one series (T, C) in a .npy: unlabeled, train = test
    np.save(tmp_path / "one.npy", x[0])
    one = load(tmp_path / "one.npy")
    assert one.task == "unlabeled" and one.train is one.test and one.train.lengths.tolist() == [6]
    # a table without a series column is one series; --features picks columns
    tab = load(tmp_path / "d.csv", DataOptions(series="", time="", label="", split="", features=("f1", "f3")))
    assert tab.d_in == 2 and len(tab.train) == 1
    np.testing.assert_allclose(tab.train.series(0)[:len(xs[0])], xs[0][:, [1, 3]], atol=1e-6)


def test_parquet_tables(arrays, tmp_path):
    from extras import need  # tests/extras.py

    pd = need("pandas", "parquet")
    need("pyarrow", "parquet", "pandas writes the parquet file the loader reads")
    xs, ys, test = arrays
    _write_csv(tmp_path / "d.csv", xs, ys, test)
    pd.read_csv(tmp_path / "d.csv").to_parquet(tmp_path / "d.parquet")
    _same(load(tmp_path / "d.parquet"), _by_hand(xs, ys, test))


def _source(fmt, tmp_path, xs, ys, test):
    """The arrays written as ``fmt``, and the train/test marks the loader will use (a folder's: made with the seed,
    reproduced here from the folder's sorted file order)."""
    if fmt == "npz":
        return _write_npz(tmp_path / "d.npz", xs, ys, test), test
    if fmt == "csv":
        return _write_csv(tmp_path / "d.csv", xs, ys, test), test
    src = _write_folder(tmp_path / "folder", xs, ys, test)
    names = sorted(f"{'a' if i % 2 else 'b'}/s{i:02d}.npy" for i in range(40))
    order = [int(n.split("/s")[1][:2]) for n in names]  # the folder's series order (sorted paths)
    marks = np.zeros(40, bool)
    marks[[order[k] for k in np.random.default_rng(0).permutation(40)[:8]]] = True
    return src, marks


def _train_order(fmt, marks):
    """Indices of the train series in the order the loader keeps them (file order; a folder's sorted paths)."""
    if fmt != "folder":
        return [i for i in range(40) if not marks[i]]
    names = sorted(f"{'a' if i % 2 else 'b'}/s{i:02d}.npy" for i in range(40))
    return [i for i in (int(n.split("/s")[1][:2]) for n in names) if not marks[i]]


@pytest.mark.parametrize("fmt", ["npz", "csv", "folder"])
def test_train_on_a_users_file_equals_fit_on_the_arrays(arrays, tmp_path, fmt):
    xs, ys, test = arrays
    src, test = _source(fmt, tmp_path, xs, ys, test)
    assert len(load(src).test) == int(test.sum())
    r = run("train", "--family", "rnn", "--data", src, "--epochs", 3, "--set", "d_hidden=8", "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    cli_model = edgeseq.load(tmp_path / "m")
    torch.manual_seed(0)
    model = edgeseq.build("rnn", d_in=5, d_out=4, task="classify", d_hidden=8)
    res = fit(model, _by_hand(xs, ys, test), TrainConfig(epochs=3, lr=1e-2, batch_size=32, seed=0, device="cpu"))
    for (k, a), b in zip(model.state_dict().items(), cli_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=k)
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] == pytest.approx(res.metrics["accuracy"])


@pytest.mark.parametrize("fmt", ["npz", "csv", "folder"])
def test_quantize_prune_and_profile_on_a_users_file_equal_the_arrays_in_python(arrays, tmp_path, fmt):
    """quantize --calib FILE gives the artifact that quantize_(calib=[the same train series]) gives; prune --data
    FILE --finetune-epochs 1 the weights prune_ gives on the same arrays; drift and profile read the file."""
    from extras import need  # tests/extras.py

    from edgeseq.quant import SCHEMES, StructuredConfig, prune_, quantize_

    need("onnxruntime", "onnx")
    xs, ys, test = arrays
    src, test = _source(fmt, tmp_path, xs, ys, test)
    torch.manual_seed(0)
    model = edgeseq.build("rnn", d_in=5, d_out=4, task="classify", d_hidden=16)
    fit(model, _by_hand(xs, ys, test), TrainConfig(epochs=5, seed=0, device="cpu"))
    edgeseq.save(model, tmp_path / "m")
    frames = np.concatenate(xs[:3]).astype(np.float32)
    # quantize: the file's train split as calibration == the same arrays handed to quantize_
    r = run("quantize", tmp_path / "m", "--scheme", "int8-static", "--target", "onnx", "--calib", src, "--eval-data",
            src, "--eval", "--eval-steps", 300, "--out", tmp_path / "q")
    assert r.exit_code == 0, r.output
    step = edgeseq.convert(edgeseq.load(tmp_path / "m"))
    cfg = SCHEMES.get("int8-static").config(weights="uint8")
    quantize_(step, cfg, calib=[xs[i].astype(np.float32) for i in _train_order(fmt, test)], target="onnx")
    ref = edgeseq.export(step, tmp_path / "q-python", target="onnx").path
    np.testing.assert_allclose(edgeseq.open(tmp_path / "q.onnx").run(frames), edgeseq.open(ref).run(frames), atol=1e-6)
    drift = json.loads((tmp_path / "q.onnx.drift.json").read_text())
    ref_test = _by_hand(xs, ys, test).test
    with torch.no_grad():
        pred = model.eval()(torch.from_numpy(ref_test.x), torch.from_numpy(ref_test.lengths)).argmax(-1).numpy()
    assert drift["metric"]["accuracy_float"] == pytest.approx(float((pred == ref_test.y).mean()))
    # prune: fine-tuning on the file == on the arrays
    r = run("prune", tmp_path / "m", "--data", src, "--finetune-epochs", 1, "--out", tmp_path / "p")
    assert r.exit_code == 0 and f"on {src.name} test" in " ".join(r.output.split()), r.output
    mine = edgeseq.load(tmp_path / "m")
    prune_(mine, StructuredConfig(0.5), data=_by_hand(xs, ys, test), finetune_epochs=1)
    for (k, a), b in zip(mine.state_dict().items(), edgeseq.load(tmp_path / "p").state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=k)
    # profile: the file's test frames as the input
    r = run("export", tmp_path / "m", "--target", "onnx", "--out", tmp_path / "e")
    assert r.exit_code == 0, r.output
    r = run("profile", tmp_path / "e.onnx", "--input", src, "--steps", 200, "--op-steps", 0, "--streams", 1,
            "--out", tmp_path / "prof")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "prof" / "report.json").read_text())
    assert report["profiles"][0]["inputs"]["what"] == f"{src.name} test split, series concatenated"


def test_profile_of_a_short_input_with_few_steps_feeds_every_pass(tmp_path):
    # found by the data fuzz through the CLI: --steps 20 --parity-steps 20 took 20 frames of the input, and the
    # N-stream pass (--stream-steps, 500 by default) and the per-operator pass indexed past them (IndexError)
    from extras import need  # tests/extras.py

    need("onnxruntime", "onnx")
    torch.manual_seed(0)
    model = edgeseq.build("rnn", d_in=3, d_out=2, task="sequence", d_hidden=4)
    art = edgeseq.export(edgeseq.convert(model), tmp_path / "a", target="onnx", steps=20).path
    xs = np.random.default_rng(0).standard_normal((40, 3)).astype(np.float32)
    np.save(tmp_path / "short.npy", xs)
    r = run("profile", art, "--input", tmp_path / "short.npy", "--steps", 20, "--warmup", 0, "--streams", 2,
            "--parity-steps", 20, "--out", tmp_path / "prof")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "prof" / "report.json").read_text())
    assert "short.npy" in report["profiles"][0]["inputs"]["what"], report["profiles"][0]["inputs"]
