"""Quantization: eager quantized steps against exact formulas, artifacts against the eager quantized step, the state
precision policy checked on the exported graphs, refusals, and drift on real data."""

import copy
import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import edgeseq
from edgeseq.errors import ConfigError, ParityError, ShapeError
from edgeseq.quant import Fp16Config, Int8DynamicConfig, Int8StaticConfig, StatePolicy, config_from_dict, quantize_
from edgeseq.quant.config import scheme_of
from edgeseq.quant.qlinear import QuantLinear

from extras import need  # tests/extras.py
from grid_oracle import LSTMGridOracle, grid_check  # tests/quant/grid_oracle.py

need("executorch", "executorch")
need("onnxruntime", "onnx")


@pytest.fixture(scope="module")
def trained():
    """A small LSTM trained briefly on JapaneseVowels (real data; the drift test needs a real task metric)."""
    from edgeseq.data import load_dataset
    from edgeseq.train import TrainConfig, fit

    ds = load_dataset("japanese-vowels")
    torch.manual_seed(0)
    model = edgeseq.build("rnn", d_in=ds.d_in, d_out=ds.d_out, task="classify", d_hidden=32)
    fit(model, ds, TrainConfig(epochs=8, seed=0))
    return model, ds


def _stream(ds, steps):
    from edgeseq.pipeline import real_stream

    return real_stream(ds.test, steps)[:, None, :]


def _jv(steps):
    """Real JapaneseVowels frames (T, 1, 12): the distribution the int8-static steps below are calibrated on."""
    from edgeseq.data import load_dataset

    return _stream(load_dataset("japanese-vowels"), steps)


def _vs_float(art, float_step, x) -> float:
    """Relative L2 error of the artifact's outputs against the float (unquantized) eager step over ``x`` (T, 1, d):
    a reference independent of the quantizer (export itself checks against the eager quantized step)."""
    x = np.asarray(x, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got, ref = edgeseq.open(art.path).run(x), edgeseq.open(float_step).run(x)
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))


def test_dynamic_linear_matches_formula():
    """QuantLinear(dynamic) == the int8 formula written out in numpy: per-channel symmetric weights, per-tensor
    affine activations (scale = (max - min) / 255 over a range that includes 0)."""
    lin = nn.Linear(20, 7)
    q = QuantLinear(lin, "dynamic")
    x = torch.randn(3, 20) * 2 + 0.5
    w = lin.weight.detach().numpy()
    ws = np.abs(w).max(1) / 127
    wq = np.clip(np.round(w / ws[:, None]), -127, 127)
    xa = x.numpy()
    lo, hi = min(xa.min(), 0), max(xa.max(), 0)
    s = (hi - lo) / 255
    zp = np.clip(-128 - np.round(lo / s), -128, 127)
    xq = np.clip(np.round(xa / s) + zp, -128, 127)
    ref = ((xq - zp) * s) @ (wq * ws[:, None]).T + lin.bias.detach().numpy()
    with torch.no_grad():
        got = q(x).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    # and it is a real quantization: not the float layer
    assert np.abs(got - lin(x).detach().numpy()).max() > 1e-4


@pytest.mark.parametrize("scheme,target,weights", [
    ("int8-dynamic", "executorch", "int8"), ("int8-dynamic", "onnx", "uint8"), ("int8-dynamic", "onnx", "int8-reduced"),
    ("int8-static", "executorch", "int8"), ("int8-static", "onnx", "uint8"), ("int8-static", "onnx", "int8-reduced")])
def test_int8_artifacts_match_eager_quantized(trained, tmp_path, scheme, target, weights):
    model, ds = trained
    cfg = (Int8DynamicConfig if scheme == "int8-dynamic" else Int8StaticConfig)(weights=weights)
    step = quantize_(edgeseq.convert(model), cfg, calib="japanese-vowels", target=target)
    float_step = edgeseq.convert(model)
    x = _stream(ds, 2000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(step, tmp_path / "m", target=target, inputs=x)
    q = art.manifest["quantization"]
    assert q["config"] == cfg.to_dict() and config_from_dict(q["config"]) == cfg
    assert q["quantized_layers"] == 2 and [r["dtype"] for r in q["state_check"]] == ["float32", "float32"]
    # the artifact really is quantized: it differs from the float step, by a small amount
    sess = edgeseq.open(art.path)
    fsess = edgeseq.open(float_step)
    got, ref = sess.run(x[:500]), fsess.run(x[:500])
    rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    assert 1e-4 < rel < 0.1, rel
    if target == "onnx":
        import onnx

        ops = {n.op_type for n in onnx.load(str(art.path)).graph.node}
        assert ({"MatMulInteger", "DynamicQuantizeLinear"} if scheme == "int8-dynamic" else {"QuantizeLinear", "DequantizeLinear"}) <= ops
    else:
        assert art.manifest["graph"]["non_delegated_ops"] == 0


@pytest.mark.parametrize("scheme", ["int8-static", "int8-dynamic"])
def test_executorch_int8_artifact_sits_on_the_numpy_grid(trained, tmp_path, scheme):
    """The ExecuTorch int8 artifact against an independent numpy model of the int8 LSTM (tests/quant/grid_oracle.py:
    the integer weights, scales and zero points, fake quantization and the gates written out in float64), step by
    step over 2,000 real frames, each step from the artifact's own state: static outputs on the oracle's grid
    point, states to 1e-5; dynamic outputs to 1e-5 but at rare ties, within one input grid step everywhere.

    Static also shows why the scheme's tolerance is not a test: an artifact exported from a step whose head input
    zero point is one step off (quantized with z, dequantized with z + 1) still lies within int8-static's 0.15 of the right step, but not on its grid."""
    model, ds = trained
    cfg = Int8StaticConfig() if scheme == "int8-static" else Int8DynamicConfig()
    step = quantize_(edgeseq.convert(model), cfg, calib="japanese-vowels", target="executorch")
    x = _stream(ds, 2000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(step, tmp_path / "m", target="executorch", inputs=x)
    oracle = LSTMGridOracle.from_step(step)
    rep = grid_check(oracle, edgeseq.open(art.path), x[:, 0])
    assert rep.ok(scheme), rep.summary()
    if scheme == "int8-static":  # on the oracle's grid point (float32 apart) but at a rare rounding tie, one step off:
        # measured 2,000 of 2,000 steps on one machine, 1,999 on another (its training gave slightly other weights)
        assert rep.exact_outputs >= 0.999, rep.summary()


class _RoundCellState(nn.Module):
    """An LSTM layer whose next cell state is rounded through int8 (per tensor): a mutation."""

    def __init__(self, cell):
        super().__init__()
        self.cell = cell
        self.d_hidden = cell.d_hidden
        self.gates = cell.gates

    def forward(self, x, h, c):
        from edgeseq.quant.qlinear import qd

        h, c = self.cell(x, h, c)
        s, z = qd.choose_qparams.tensor(c, -128, 127, 2.0**-12, torch.int8)
        return h, qd.dequantize_per_tensor.tensor(qd.quantize_per_tensor.tensor(c, s, z, -128, 127, torch.int8),
                                                  s, z, -128, 127, torch.int8)


def _mutate(step, what):
    from edgeseq.quant.qlinear import qd

    g, head, H = step.layers[0].gates, step.head, step.layers[0].d_hidden
    with torch.no_grad():
        if what == "activation zero point off by one":  # quantized with z, dequantized with z + 1 (a zero point
            # shifted alone changes nothing but the clamp: the defect is a kernel and its grid disagreeing)
            def skewed(x, qp):
                q = qd.quantize_per_tensor(x, qp[0], qp[1], -128, 127, torch.int8)
                return qd.dequantize_per_tensor(q, qp[0], qp[1] + 1, -128, 127, torch.int8)

            head._fq = skewed
        elif what == "activation scale off by 1%":
            g.out_q = (g.out_q[0] * 1.01, g.out_q[1])
        elif what == "weight scale off by 1%":
            g.weight_scale.mul_(1.01)
        elif what == "cell state rounded through int8":
            step.layers[0] = _RoundCellState(step.layers[0])
        elif what == "forget-gate bias changed":
            g.bias[H:2 * H] += 0.01
        else:
            raise ValueError(what)


@pytest.mark.parametrize("scheme,what", [
    ("int8-static", "activation zero point off by one"), ("int8-static", "activation scale off by 1%"),
    ("int8-static", "cell state rounded through int8"), ("int8-static", "forget-gate bias changed"),
    ("int8-dynamic", "weight scale off by 1%"), ("int8-dynamic", "cell state rounded through int8"),
    ("int8-dynamic", "forget-gate bias changed")])
def test_grid_check_catches_each_mutation(trained, scheme, what):
    """The mutation run: the eager quantized step (what the artifacts equal, per the test above) passes the grid
    check; with one defect each (docs/testing.md lists them) it fails it."""
    model, ds = trained
    cfg = Int8StaticConfig() if scheme == "int8-static" else Int8DynamicConfig()
    step = quantize_(edgeseq.convert(model), cfg, calib="japanese-vowels", target="executorch")
    oracle = LSTMGridOracle.from_step(step)
    x = _stream(ds, 400)[:, 0]
    assert grid_check(oracle, edgeseq.open(step), x).ok(scheme)
    right = edgeseq.open(step).run(x)
    _mutate(step, what)
    rep = grid_check(oracle, edgeseq.open(step), x)
    assert not rep.ok(scheme), rep.summary()
    if what == "activation zero point off by one":  # why the scheme's tolerance is no test: this defect is inside it
        got = edgeseq.open(step).run(x)
        assert np.abs(got - right).max() / max(1.0, np.abs(right).max()) <= scheme_of(Int8StaticConfig()).tolerance


def test_weight_formats_a_target_cannot_run_refused_before_work(trained):
    model, _ = trained
    step = edgeseq.convert(model)
    with pytest.raises(ConfigError, match="cannot use full-range int8 weights.*weights='uint8'"):
        quantize_(step, Int8DynamicConfig(), target="onnx")
    with pytest.raises(ConfigError, match="executorch takes int8 weights"):
        quantize_(step, Int8DynamicConfig(weights="uint8"), target="executorch")
    with pytest.raises(ConfigError, match="int8-static on onnx cannot use full-range int8 weights.*weights='uint8'"):
        quantize_(step, Int8StaticConfig(), calib="japanese-vowels", target="onnx")
    with pytest.raises(ConfigError, match="int8-static on executorch takes int8 weights"):
        quantize_(step, Int8StaticConfig(weights="uint8"), calib="japanese-vowels", target="executorch")
    with pytest.raises(ConfigError, match="weights='int4' is not a weight format"):
        quantize_(step, Int8DynamicConfig(weights="int4"), target="onnx")
    assert getattr(step, "quantization", None) is None


def test_uint8_weights_sit_on_onnxruntimes_grid():
    """uint8 weights (asymmetric per channel, 0..255) are the integers, zero points and scales onnxruntime's own
    quantizer computes for QUInt8 weights (so its re-quantization of the dequantized weights is a no-op), and
    the eager layer computes the formula written out in numpy."""
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import quantize_data

    torch.manual_seed(0)
    lin = nn.Linear(40, 9)
    with torch.no_grad():
        lin.weight[3].abs_()  # a channel with no negative weight: its range widens to include 0, zero point 0
    q = QuantLinear(lin, "dynamic", "uint8")
    w = lin.weight.detach().numpy()
    for c in range(9):
        zp, scale, qw = quantize_data(w[c], TensorProto.UINT8, symmetric=False)
        np.testing.assert_array_equal(q.weight_q[c].numpy(), qw)
        assert int(q.weight_zero_point[c]) == int(zp) and float(q.weight_scale[c]) == float(scale)
    assert int(q.weight_zero_point[3]) == 0 and q.weight_q.min() == 0 and q.weight_q.max() == 255
    # the dequantized weights re-quantize to the same integers
    deq = q.weight().numpy()
    for c in range(9):
        _, _, again = quantize_data(deq[c], TensorProto.UINT8, symmetric=False)
        np.testing.assert_array_equal(again, q.weight_q[c].numpy())
    x = torch.randn(4, 40)
    xa = x.numpy()
    lo, hi = min(xa.min(), 0), max(xa.max(), 0)
    s = (hi - lo) / 255
    zpa = np.clip(-128 - np.round(lo / s), -128, 127)
    xq = np.clip(np.round(xa / s) + zpa, -128, 127)
    wd = (q.weight_q.numpy().astype(np.float64) - q.weight_zero_point.numpy()[:, None]) * q.weight_scale.numpy()[:, None]
    ref = ((xq - zpa) * s) @ wd.T + lin.bias.detach().numpy()
    with torch.no_grad():
        np.testing.assert_allclose(q(x).numpy(), ref, rtol=1e-5, atol=1e-5)


def test_onnx_uint8_weights_do_not_saturate(tmp_path):
    """A wide layer with large weights and inputs, lowered the way int8-dynamic lowers it for onnx: with uint8
    weights onnxruntime computes exactly the eager quantized layer. (With full-range int8 weights its x86 u8 x s8
    kernels, without VNNI, sum pairs of products in int16 and saturate: on this layer and machine the relative
    error was 0.39; that is why the onnx target refuses them.)"""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    torch.manual_seed(0)
    lin = nn.Linear(140, 512)
    with torch.no_grad():
        lin.weight.mul_(4)
    for weights in ("uint8", "int8-reduced"):
        q = QuantLinear(lin, "dynamic", weights)
        torch.onnx.export(q.dequantized(), (torch.randn(1, 140),), str(tmp_path / "f.onnx"), dynamo=False)
        quantize_dynamic(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), per_channel=True,
                         reduce_range=weights == "int8-reduced",
                         weight_type=QuantType.QUInt8 if weights == "uint8" else QuantType.QInt8)
        sess = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
        x = torch.randn(200, 140) * 3
        got = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: x[i:i + 1].numpy()})[0] for i in range(200)])
        with torch.no_grad():
            ref = torch.cat([q(x[i:i + 1]) for i in range(200)]).numpy()
        assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-5, weights


def test_legacy_reduce_range_manifests_still_load():
    assert config_from_dict({"scheme": "int8-dynamic", "version": 1, "reduce_range": True, "state": {}}).weights == "int8-reduced"
    assert config_from_dict({"scheme": "int8-static", "version": 1, "reduce_range": False, "state": {}}).weights == "int8"


def test_scheme_target_refused_naming_what_runs(trained, tmp_path):
    model, _ = trained
    step = quantize_(edgeseq.convert(model), Fp16Config())
    with pytest.raises(ConfigError, match="onnx runs: int8-dynamic, int8-static"):
        edgeseq.export(step, tmp_path / "m", target="onnx")
    assert not list(tmp_path.iterdir())


def test_calibration_shape_and_need(trained):
    model, _ = trained
    with pytest.raises(ShapeError, match=r"expected \(T, 12\).*got shape \(100, 1, 7\)"):
        quantize_(edgeseq.convert(model), Int8StaticConfig(), calib=np.zeros((100, 7), np.float32))
    with pytest.raises(ConfigError, match="needs calibration data"):
        quantize_(edgeseq.convert(model), Int8StaticConfig())
    with pytest.raises(ConfigError, match="not state tensors of this step; its state: h0, c0"):
        quantize_(edgeseq.convert(model), Int8DynamicConfig(state=StatePolicy({"h9": "float16"})))


def test_state_policy_storage_in_graph_and_bytes(trained, tmp_path):
    model, ds = trained
    float_step = edgeseq.convert(model)
    policy = StatePolicy({"c0": "float16", "h0": "int8"})
    step = quantize_(edgeseq.convert(model), Int8DynamicConfig(weights="int8-reduced", state=policy), calib="japanese-vowels")
    assert [t.dtype for t in step.state_spec.tensors] == ["int8", "float16"]
    assert step.state_spec.bytes_per_stream == float_step.state_spec.bytes_per_stream * 3 // 8  # 1/4 + 1/2 of the two halves
    for target in ("onnx", "executorch"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            art = edgeseq.export(step, tmp_path / target, target=target, inputs=_stream(ds, 1000))
        checks = {r["name"]: r for r in art.manifest["quantization"]["state_check"]}
        assert checks["h0"]["dtype"] == "int8" and checks["c0"]["dtype"] == "float16"
        assert [t["dtype"] for t in art.manifest["state_spec"]["tensors"]] == ["int8", "float16"]
        sess = edgeseq.open(art.path)
        sess.push(_stream(ds, 1)[0])
        assert [t.dtype for t in sess.state.tensors] == [np.int8, np.float16]


def test_state_policy_refuses_unrepresentable_fill():
    aaren = edgeseq.build("aaren", d_in=4, d_out=2, d_model=16, n_layers=1)
    with pytest.raises(ConfigError, match="m0.*int8 storage cannot hold it"):
        quantize_(edgeseq.convert(aaren), Int8DynamicConfig(state=StatePolicy({"m0": "int8"})), calib=np.zeros((10, 4), np.float32))


def test_onnx_static_graph_carries_the_eager_grids(trained, tmp_path):
    """int8-static's onnx graph is written by edgeseq (quant/onnx_qdq.py): each linear layer's weight integers,
    scales and zero points, its calibrated input and output scales and zero points (int8 affine shifted to uint8,
    +128) and its int32 bias are the eager layer's own; onnxruntime fuses each layer into one QGemm; the state
    outputs come out of float ops (LSTM's h also feeds the head's quantized Gemm: its Q/DQ sits on the Gemm's side)."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from edgeseq.quant.qlinear import bias_scale

    model, ds = trained
    step = quantize_(edgeseq.convert(model), Int8StaticConfig(weights="uint8"), calib="japanese-vowels", target="onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(step, tmp_path / "m", target="onnx", inputs=_stream(ds, 2000))
    graph = onnx.load(str(art.path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    layers = {p: m for p, m in step.named_modules() if isinstance(m, QuantLinear)}
    gemms = [n for n in graph.node if n.op_type == "Gemm"]
    assert len(gemms) == len(layers) == 2
    for gemm in gemms:
        wdq = producer[gemm.input[1]]
        assert wdq.op_type == "DequantizeLinear"
        (q,) = [m for m in layers.values() if tuple(m.weight_q.shape) == inits[wdq.input[0]].shape]  # shapes differ here
        np.testing.assert_array_equal(inits[wdq.input[0]], q.weight_q.numpy())
        np.testing.assert_array_equal(inits[wdq.input[1]], q.weight_scale.numpy())
        np.testing.assert_array_equal(inits[wdq.input[2]].astype(np.int64), q.weight_zero_point.numpy())
        xdq = producer[gemm.input[0]]
        xq = producer[xdq.input[0]]
        assert (xdq.op_type, xq.op_type) == ("DequantizeLinear", "QuantizeLinear")
        assert float(inits[xq.input[1]]) == np.float32(q.in_q[0]) and int(inits[xq.input[2]]) == q.in_q[1] + 128
        assert inits[xq.input[2]].dtype == np.uint8
        out_q = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == gemm.output[0])
        assert float(inits[out_q.input[1]]) == np.float32(q.out_q[0]) and int(inits[out_q.input[2]]) == q.out_q[1] + 128
        bdq = producer[gemm.input[2]]
        bq = inits[bdq.input[0]]
        assert bq.dtype == np.int32
        np.testing.assert_array_equal(inits[bdq.input[1]], bias_scale(q.in_q[0], q.weight_scale).numpy())
        np.testing.assert_allclose(bq * inits[bdq.input[1]].astype(np.float64), q.bias.detach().numpy(), rtol=1e-6)
    assert [r["producer"] for r in art.manifest["quantization"]["state_check"]] == ["Mul", "Add"]
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(art.path), so, providers=["CPUExecutionProvider"])
    assert sum(n.op_type == "QGemm" for n in onnx.load(so.optimized_model_filepath).graph.node) == 2


def test_static_onnx_layer_matches_eager_to_the_output_step(tmp_path):
    """One 64x96 static layer, 4,000 inputs: onnxruntime's QGemm output vs the eager layer, in output steps. With
    onnxruntime's own static pass the uint8 weights were re-gridded and 9.3% of outputs sat one step off; on the
    pinned grids only float rounding order differs (measured 0.005%). A graph whose weight is not the layer's
    dequantized weight is refused."""
    import onnxruntime as ort

    from edgeseq.errors import ArtifactError
    from edgeseq.quant.onnx_qdq import write_static_qdq

    torch.manual_seed(0)
    x = torch.randn(4000, 64) * 1.5

    class Net(nn.Module):
        def __init__(self, fc):
            super().__init__()
            self.fc = fc

        def forward(self, x):
            return self.fc(x)

    for weights in ("uint8", "int8-reduced"):
        net = Net(QuantLinear(nn.Linear(64, 96), "static", weights))
        net.fc.start_calibration()
        net.fc(x[:1000])
        net.fc.finish_calibration()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(Net(net.fc.dequantized()), (x[:2],), str(tmp_path / "f.onnx"), dynamo=True, opset_version=18,
                              dynamic_shapes=({0: torch.export.Dim("b")},), verbose=False)
        assert write_static_qdq(tmp_path / "f.onnx", tmp_path / "q.onnx", net) == 1
        sess = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            steps = np.abs(got - net(x).numpy()) / net.fc.out_q[0]
        assert steps.max() < 1.001 and (steps > 0.5).mean() < 1e-3, (weights, (steps > 0.5).mean())
    with torch.no_grad():
        net.fc.weight_q[0, 0] += 1  # the layer no longer matches the float graph it would rewrite
    with pytest.raises(ArtifactError, match="not the layer's dequantized int8 weight"):
        write_static_qdq(tmp_path / "f.onnx", tmp_path / "bad.onnx", net)
    assert not (tmp_path / "bad.onnx").exists()


def test_state_check_flags_a_state_output_from_a_dequantize(tmp_path):
    """The verifier on a graph where a state output comes out of a DequantizeLinear (the state round-trips through
    int8): flagged, and ``enforce`` refuses it with a one-line reason; the same output from a float op passes."""
    import onnx
    from onnx import TensorProto, helper

    from edgeseq.quant.verify import check_onnx, enforce

    def graph(through_qdq: bool):
        nodes = [helper.make_node("Add", ["h", "x"], ["h_new"])]
        if through_qdq:
            nodes += [helper.make_node("QuantizeLinear", ["h_new", "s", "z"], ["h_q"]),
                      helper.make_node("DequantizeLinear", ["h_q", "s", "z"], ["next_h"])]
        else:
            nodes += [helper.make_node("Identity", ["h_new"], ["next_h"])]
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("x", "h")],
                              [helper.make_tensor_value_info("next_h", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("z", TensorProto.UINT8, [], [128])])
        path = tmp_path / f"g{int(through_qdq)}.onnx"
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(path))
        return path

    bad = check_onnx(graph(True), ["h0"], ["next_h"], {"h0": "float32"})
    assert bad[0]["producer"] == "DequantizeLinear" and not bad[0]["ok"]
    with pytest.raises(ParityError, match="'h0' leaves the graph as float32 from DequantizeLinear"):
        enforce(bad, "onnx")
    good = check_onnx(graph(False), ["h0"], ["next_h"], {"h0": "float32"})
    assert good[0]["ok"] and good[0]["producer"] == "Identity"
    assert not check_onnx(graph(True), ["h0"], ["next_h"], {"h0": "int8"})[0]["ok"]  # a float32 output is no int8 storage


FAMILY_INT8_VS_FLOAT = {"aaren": 0.025, "mamba": 0.025}  # ~3x the measured 0.0062 / 0.0075 (docs/testing.md)


@pytest.mark.parametrize("family,kw", [("aaren", dict(d_model=16, n_layers=2)), ("mamba", dict(d_model=16, n_layers=1))])
def test_families_quantize_and_export(family, kw, tmp_path):
    model = edgeseq.build(family, d_in=12, d_out=9, **kw)
    step = quantize_(edgeseq.convert(model), Int8DynamicConfig())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(step, tmp_path / "m", target="executorch", steps=1000)
    rel = _vs_float(art, edgeseq.convert(model), torch.randn(1000, 1, 12))
    assert 1e-5 < rel < FAMILY_INT8_VS_FLOAT[family], rel  # quantized, and close to the float model


def test_fp16_executorch(trained, tmp_path):
    model, ds = trained
    step = quantize_(edgeseq.convert(model), Fp16Config())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(step, tmp_path / "m", target="executorch", inputs=_stream(ds, 1000))
    rel = _vs_float(art, edgeseq.convert(model), _stream(ds, 1000))
    assert 1e-6 < rel < 2e-3, rel  # float16 arithmetic: close to the float32 model (measured 4.1e-4), not equal
    assert json.loads(art.manifest_path.read_text())["quantization"]["compute_dtype"] == "float16"


def test_drift_bounded_over_10000_steps(trained):
    """10,000-step rollout on real data: int8-dynamic output error stays small and does not grow; an int8 cell
    state (opt-in) drifts more than the float one."""
    from edgeseq.quant.drift import evaluate

    model, _ = trained
    f = edgeseq.convert(model)
    q = quantize_(edgeseq.convert(model), Int8DynamicConfig())
    rep = evaluate(f, q, "japanese-vowels", steps=10_000, budget=0.2)
    s = rep.summary()
    assert s["steps"] == 10_000 and rep.bounded and rep.within_budget, s
    assert 0 < s["output_rel_error_mean"] < 0.05
    assert abs(s["metric"]["accuracy_change_points"]) <= 5
    svg = rep.plot_svg()
    assert svg.startswith("<svg") and svg.count("<polyline") == 2
    q8 = quantize_(edgeseq.convert(model), Int8DynamicConfig(state=StatePolicy({"c0": "int8"})), calib="japanese-vowels")
    rep8 = evaluate(f, q8, "japanese-vowels", steps=2_000)
    assert rep8.summary()["state_rel_error_max"] > s["state_rel_error_max"]


@pytest.mark.parametrize("bits", [8, 4])
def test_weight_only_grid_is_onnxruntimes(trained, tmp_path, bits):
    """The MatMulNBits weights onnxruntime writes, unpacked and dequantized here, are exactly our eager weights;
    the artifact then matches the eager step; ExecuTorch is refused."""
    import onnx
    from onnx import numpy_helper

    from edgeseq.quant import Int4WeightOnlyConfig, Int8WeightOnlyConfig

    model, ds = trained
    cfg = Int8WeightOnlyConfig() if bits == 8 else Int4WeightOnlyConfig()
    with pytest.raises(ConfigError, match="cannot run on target 'executorch'"):
        quantize_(edgeseq.convert(model), cfg, target="executorch")
    step = quantize_(edgeseq.convert(model), cfg, target="onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(step, tmp_path / "m", target="onnx", inputs=_stream(ds, 1000))
    g = onnx.load(str(art.path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    nodes = [n for n in g.node if n.op_type == "MatMulNBits"]
    assert len(nodes) == 2
    eager = {tuple(m.weight.shape[::-1]): m.weight.detach().numpy() for m in step.modules() if type(m).__name__ == "WeightOnlyLinear"}
    for n in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        K, N, blk = attrs["K"], attrs["N"], attrs["block_size"]
        packed, scales = inits[n.input[1]], inits[n.input[2]].reshape(N, -1)
        if bits == 4:
            q = np.stack([packed & 0x0F, packed >> 4], -1).reshape(N, -1).astype(np.int32) - 8
        else:
            q = packed.reshape(N, -1).astype(np.int32) - 128
        deq = (q.reshape(N, -1, blk) * scales[:, :, None]).reshape(N, -1)[:, :K]
        np.testing.assert_allclose(deq, eager[(K, N)], rtol=0, atol=1e-7)


def _quantized_weights(path):
    """The weight initializers onnxruntime quantized, found from the lowered graph: MatMulInteger's B (dynamic),
    a MatMul/Gemm's DequantizeLinear-fed B (QDQ static) or a MatMulNBits' packed B, mapped back to their names."""
    import onnx

    g = onnx.load(str(path)).graph
    producer = {o: n for n in g.node for o in n.output}
    names = []
    for n in g.node:
        if n.op_type == "MatMulInteger":
            names.append(n.input[1])
        elif n.op_type in ("MatMul", "Gemm") and n.input[1] in producer and producer[n.input[1]].op_type == "DequantizeLinear":
            names.append(producer[n.input[1]].input[0])
        elif n.op_type == "MatMulNBits":
            names.append(n.input[1])
    return names


# ~3x the measured relative error vs the float step (0.0073, 0.0145, 0.0675; docs/testing.md)
MAMBA_ONNX_VS_FLOAT = {"int8-dynamic": 0.025, "int8-static": 0.05, "int4-weight-only": 0.2}


@pytest.mark.parametrize("scheme", ["int8-dynamic", "int8-static", "int4-weight-only"])
def test_onnx_quantizes_exactly_the_steps_linear_layers(tmp_path, scheme):
    """Left to its op-type filter onnxruntime also quantized a Mamba step's SSM contraction (rounding the state
    through int8), its conv sum against a ones vector and its norm's mean row, none of which the eager step
    quantizes (the artifact was refused: 1.52 scaled error, int8-static). Now each quantized op in the graph
    reads the weight of one of the eager step's quantized layers, one per layer, and parity holds over 2,000
    steps."""
    from edgeseq.quant import Int4WeightOnlyConfig
    from edgeseq.quant.weight_only import WeightOnlyLinear

    torch.manual_seed(0)
    model = edgeseq.build("mamba", d_in=12, d_out=9, task="classify", d_model=16, n_layers=2)
    cfg = {"int8-dynamic": Int8DynamicConfig(weights="uint8"), "int8-static": Int8StaticConfig(weights="uint8"),
           "int4-weight-only": Int4WeightOnlyConfig()}[scheme]
    step = quantize_(edgeseq.convert(model), cfg, calib="japanese-vowels" if scheme == "int8-static" else None,
                     target="onnx")
    layers = [name for name, m in step.named_modules() if isinstance(m, (QuantLinear, WeightOnlyLinear))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(step, tmp_path / "m", target="onnx", steps=2000)
    got = _quantized_weights(art.path)
    assert len(got) == len(layers) == 16
    for layer in layers:  # each layer's weight (renamed by quantization: quantized / _kn / Q4 suffixes) once
        assert sum(1 for w in got if f".{layer}.weight" in w) == 1, (layer, got)
    assert not any("ones" in w or "mean_row" in w for w in got)
    rel = _vs_float(art, edgeseq.convert(model), _jv(1000))
    assert 1e-5 < rel < MAMBA_ONNX_VS_FLOAT[scheme], rel


def test_onnx_node_selection_refuses_a_layer_it_cannot_find(tmp_path):
    """A quantized layer whose weight initializer is not in the graph is an error, not a float layer the
    manifest calls int8; so is a lowered graph with the wrong number of quantized layers."""
    import onnx

    from edgeseq.errors import ArtifactError
    from edgeseq.quant.onnx_select import expect_quantized, select_nodes

    lin = nn.Sequential(nn.Linear(4, 3))
    path = tmp_path / "f.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(lin, (torch.zeros(1, 4),), str(path), dynamo=True)
    names = {i.name for i in onnx.load(str(path)).graph.initializer}
    assert "0.weight" in names
    assert len(select_nodes(path, ["0"])) == 1
    with pytest.raises(ArtifactError, match="could not find the ONNX node of quantized layer"):
        select_nodes(path, ["1"])
    with pytest.raises(ArtifactError, match="quantized 0 linear layer"):
        expect_quantized(path, 1, "MatMulInteger")


def test_continual_convolutions_quantize_per_filter():
    """A continual network's dense temporal convolutions quantize like linear layers: int8-dynamic equals the
    formula written out in numpy on a stream, per frame: the dilated kernel's taps (frames t-6, t-3, t, zeros
    before the stream starts) fake-quantized per tensor, the weights per filter (one scale per output channel
    over C_in x K)."""
    from edgeseq.models.continual import OfflineModel

    torch.manual_seed(0)
    net = nn.Sequential(nn.ConstantPad1d((6, 0), 0.0), nn.Conv1d(5, 8, 3, dilation=3), nn.ReLU(), nn.Conv1d(8, 3, 1))
    step = quantize_(edgeseq.convert(OfflineModel(net, frame_shape=5)), Int8DynamicConfig())
    assert step.quant_layers == 2
    x = torch.randn(300, 1, 5) * 1.5 + 0.3

    def fq_act(a):
        lo, hi = min(a.min(), 0), max(a.max(), 0)
        s = max((hi - lo) / 255, 2.0**-12)  # smallest scale: an all-zero ReLU output still quantizes
        zp = np.clip(-128 - np.round(lo / s), -128, 127)
        return (np.clip(np.round(a / s) + zp, -128, 127) - zp) * s

    def fq_filters(w):
        s = np.abs(w).reshape(len(w), -1).max(1) / 127
        return np.clip(np.round(w / s.reshape(-1, *(1,) * (w.ndim - 1))), -127, 127) * s.reshape(-1, *(1,) * (w.ndim - 1))

    w1, b1 = fq_filters(net[1].weight.detach().numpy()), net[1].bias.detach().numpy()
    w2, b2 = fq_filters(net[3].weight.detach().numpy()[:, :, 0]), net[3].bias.detach().numpy()
    xs = np.concatenate([np.zeros((6, 5), np.float32), x[:, 0].numpy()])
    ref = []
    for t in range(len(x)):
        taps = fq_act(xs[[t, t + 3, t + 6]].T)  # (C_in, K), oldest tap first
        h = np.maximum(np.einsum("ock,ck->o", w1, taps) + b1, 0)
        ref.append(w2 @ fq_act(h) + b2)
    got = edgeseq.open(step).run(x)[:, 0]
    np.testing.assert_allclose(got, np.array(ref), rtol=1e-5, atol=1e-5)
    # a real quantization: not the float network
    with torch.no_grad():
        float_out = net(x[:, 0].T[None])[0].T.numpy()
    assert np.abs(got - float_out).max() > 1e-3


# ~3x the measured relative error vs the float network (0.0041, 0.0121, 0.0004, 0.052; docs/testing.md)
TCN_VS_FLOAT = {"int8-dynamic": 0.015, "int8-static": 0.04, "fp16": 2e-3, "int4-weight-only": 0.15}


@pytest.mark.parametrize("scheme,target", [("int8-dynamic", "executorch"), ("int8-static", "onnx"),
                                           ("fp16", "executorch"), ("int4-weight-only", "onnx")])
def test_continual_tcn_quantized_artifacts(tmp_path, scheme, target):
    """The continual family's temporal CNN (residual levels, dilation 2, a 1x1 head) under each kind of scheme:
    the artifact matches its eager quantized step over 2,000 steps, the ring buffers leave the graph as float,
    ExecuTorch delegates every int8 op (one partition), and onnxruntime quantizes exactly the three
    convolutions' weights."""
    from edgeseq.quant import Int4WeightOnlyConfig

    torch.manual_seed(0)
    model = edgeseq.build("continual", d_in=12, d_out=9, task="classify", channels=(32, 32), kernel_size=3)
    cfg = {"int8-dynamic": Int8DynamicConfig(), "int8-static": Int8StaticConfig(weights="uint8"),
           "fp16": Fp16Config(), "int4-weight-only": Int4WeightOnlyConfig()}[scheme]
    step = quantize_(edgeseq.convert(model), cfg, calib="japanese-vowels" if scheme == "int8-static" else None,
                     target=target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(step, tmp_path / "m", target=target, steps=2000)
    rel = _vs_float(art, edgeseq.convert(model), _jv(2000))
    assert 1e-6 < rel < TCN_VS_FLOAT[scheme], rel  # quantized, and close to the float network
    checks = art.manifest["quantization"]["state_check"]
    assert [r["dtype"] for r in checks] == ["float32", "float32"]  # the two ring buffers
    if target == "onnx":
        got = _quantized_weights(art.path)
        assert len(got) == 3 and all(".linear.weight" in w for w in got), got
    elif scheme != "fp16":  # fp16 casts the float32 input and state at the boundary, outside the delegate
        assert art.manifest["graph"]["non_delegated_ops"] == 0 and art.manifest["graph"]["partitions"] == 1
    else:  # the weights really are float16 in the program (XNNPACK stored a float16 convolution's as float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fp32 = edgeseq.export(edgeseq.convert(model), tmp_path / "f", target=target, steps=10)
        weight_bytes = sum(p.numel() * 4 for p in model.parameters())  # float32; float16 saves half of it
        assert fp32.manifest["file_bytes"] - art.manifest["file_bytes"] >= 0.4 * weight_bytes


def test_fp16_aaren_running_sums_stay_float32(tmp_path):
    """Aaren's u (sum of exp-scores) and w (weighted sum of values) grow with the stream. Computed in float16 they
    stop absorbing increments: with every score 0 (keys zeroed), u must count the steps, and a float16 sum
    sticks at 2,048. Under the fp16 scheme the state arithmetic stays float32 (manifest: state_math_dtype), so u
    is exactly 3,000 after 3,000 steps, the output still tracks the float step, and the ExecuTorch artifact
    matches the eager fp16 step."""
    torch.manual_seed(0)
    model = edgeseq.build("aaren", d_in=4, d_out=3, d_model=8, n_heads=2, n_layers=1)
    with torch.no_grad():
        model.blocks[0].attn.key.weight.zero_()
        model.blocks[0].attn.key.bias.zero_()
    float_step = edgeseq.convert(model)
    step = quantize_(edgeseq.convert(model), Fp16Config())
    x = torch.randn(3000, 1, 4)
    state, fstate = step.init_state(1), float_step.init_state(1)
    with torch.no_grad():
        for t in range(len(x)):
            y, state = step(x[t], state)
            fy, fstate = float_step(x[t], fstate)
    u = state[step.state_spec.names.index("u0")]
    assert u.dtype == torch.float32 and torch.equal(u, torch.full_like(u, 3000.0))
    assert (torch.tensor(2048.0, dtype=torch.float16) + 1.0).item() == 2048.0  # what a float16 u would do
    assert (y - fy).abs().max() <= 1e-2 * fy.abs().max()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(step, tmp_path / "m", target="executorch", steps=2000)
    sess = edgeseq.open(art.path)  # the artifact keeps counting too: u is exactly the number of steps
    ys = sess.run(x.numpy())
    u = sess.state.tensors[step.state_spec.names.index("u0")]
    assert u.dtype == np.float32 and (u == 3000.0).all(), u
    np.testing.assert_allclose(ys[-1], fy.numpy(), atol=1e-2 * float(fy.abs().max()))
    assert art.manifest["quantization"]["state_math_dtype"] == "float32"
    assert art.manifest["quantization"]["compute_dtype"] == "float16"


def test_state_check_covers_passed_through_ring_buffer_frames(tmp_path):
    """A 3D continual step's ring buffers shift by renaming; the ExecuTorch program leaves those next-state tensors
    out (runtime.passthrough_state). The state check still lists every state tensor, those as coming straight
    from their input, and the quantized artifact matches its eager step."""
    from edgeseq.models.continual import OfflineModel

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(3, 8, (3, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)), nn.ReLU(),
                        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    step = quantize_(edgeseq.convert(OfflineModel(net, (3, 8, 8), window=5)), Int8DynamicConfig(), target="executorch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(step, tmp_path / "clip", target="executorch", steps=300)
    rel = _vs_float(art, edgeseq.convert(OfflineModel(net, (3, 8, 8), window=5)), torch.randn(300, 1, 192))
    assert 1e-6 < rel < 0.005, rel  # quantized, and close to the float network (measured 1.5e-3)
    assert art.manifest["quantization"]["quantized_layers"] == 2
    passed = art.manifest["runtime"]["passthrough_state"]
    checks = art.manifest["quantization"]["state_check"]
    assert [r["name"] for r in checks] == list(step.state_spec.names)
    assert passed and {r["name"]: r["producer"] for r in checks if r["name"] in passed} == {
        n: f"input {src} (passed through)" for n, src in passed.items()}
    assert all(r["dtype"] == "float32" for r in checks)


def test_symmetric_activation_grid_formula():
    from edgeseq.quant.qlinear import EPS, symmetric_qparams

    assert symmetric_qparams(-0.5, 2.54) == (pytest.approx(2.54 / 127), 0)
    assert symmetric_qparams(-3.81, 1.0) == (pytest.approx(0.03), 0)
    assert symmetric_qparams(0.0, 0.0) == (EPS, 0)


def test_tensorrt_qdq_follows_explicit_quantization_rules(trained, tmp_path):
    """int8-static for TensorRT: the ONNX file carries the eager layers' int8 weights (symmetric, per output
    channel), their calibrated symmetric activation scales with int8 zero points 0, and the eager (grid-rounded)
    float bias; no uint8 or int32 tensor anywhere. The file is validated on onnxruntime with graph optimizations
    off (each Q/DQ as written) against the eager quantized step over 2,000 real frames."""
    import onnx
    from onnx import numpy_helper

    from edgeseq.exporters.onnx import check_tensorrt_qdq
    from edgeseq.errors import ArtifactError

    model, ds = trained
    step = quantize_(edgeseq.convert(model), Int8StaticConfig(activations="symmetric"), calib="japanese-vowels",
                     target="tensorrt")
    layers = {p: m for p, m in step.named_modules() if isinstance(m, QuantLinear)}
    assert len(layers) == 2 and all(m.in_q[1] == 0 and m.out_q[1] == 0 for m in layers.values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(step, tmp_path / "trt", target="tensorrt", inputs=_stream(ds, 2000))
    assert art.path.suffix == ".onnx" and art.manifest["target"] == "tensorrt"
    rt = art.manifest["runtime"]
    assert rt["ort_optimization"] == "disabled" and rt["tensorrt_qdq"] == {"quantize": 4, "dequantize": 6, "weight_dequantize": 2}
    from typer.testing import CliRunner

    from edgeseq.cli.main import app

    r = CliRunner().invoke(app, ["inspect", str(art.path)])
    assert r.exit_code == 0 and "tensorrt: 4 QuantizeLinear / 6 DequantizeLinear (2 on weights)" in " ".join(r.output.split())
    assert [r["dtype"] for r in art.manifest["quantization"]["state_check"]] == ["float32", "float32"]
    graph = onnx.load(str(art.path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    assert not [n for n, a in inits.items() if a.dtype in (np.uint8, np.int32)]
    producer = {o: n for n in graph.node for o in n.output}
    for gemm in (n for n in graph.node if n.op_type == "Gemm"):
        wdq = producer[gemm.input[1]]
        (q,) = [m for m in layers.values() if tuple(m.weight_q.shape) == inits[wdq.input[0]].shape]
        np.testing.assert_array_equal(inits[wdq.input[0]], q.weight_q.numpy())
        np.testing.assert_array_equal(inits[wdq.input[1]], q.weight_scale.numpy())
        assert inits[wdq.input[2]].dtype == np.int8 and not inits[wdq.input[2]].any()
        xq = producer[producer[gemm.input[0]].input[0]]
        assert float(inits[xq.input[1]]) == np.float32(q.in_q[0]) and inits[xq.input[2]].dtype == np.int8
        assert int(inits[xq.input[2]]) == 0
        np.testing.assert_array_equal(inits[gemm.input[2]], q.bias.detach().numpy())  # float, grid-rounded
    # the onnx target's graph (uint8 activations, int32 bias) is not TensorRT's form: the rule check says why
    onnx_step = quantize_(edgeseq.convert(model), Int8StaticConfig(weights="uint8"), calib="japanese-vowels", target="onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_art = edgeseq.export(onnx_step, tmp_path / "ort", target="onnx", steps=50)
    with pytest.raises(ArtifactError, match="TensorRT takes int8"):
        check_tensorrt_qdq(onnx.load(str(onnx_art.path)))


@pytest.mark.parametrize("config,match", [
    (Int8DynamicConfig(), "cannot run on target 'tensorrt'.*tensorrt runs: int8-static"),
    (Int8StaticConfig(), "takes symmetric activations"),
    (Int8StaticConfig(weights="uint8", activations="symmetric"), "takes int8 weights"),
    (Int8StaticConfig(activations="skewed"), "not an activation grid"),
])
def test_tensorrt_refuses_what_its_explicit_quantization_cannot_take(trained, config, match):
    from edgeseq.quant.config import check_target

    with pytest.raises(ConfigError, match=match):
        check_target(config, "tensorrt")
