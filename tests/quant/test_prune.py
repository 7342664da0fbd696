"""Pruning: structured rewrites against a zero-masked original (exact), N:M and magnitude masks, fine-tuning keeps
zeros, refusals, and the CLI."""

import copy

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import edgeseq
from edgeseq.cli.main import app
from edgeseq.errors import ConfigError
from edgeseq.quant import NMConfig, StructuredConfig, UnstructuredConfig, prune_, sparsity


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_structured_equals_zeroed_units(cell):
    """Removing units == keeping them with every incoming weight and bias zeroed (their state then stays 0)."""
    model = edgeseq.build("rnn", d_in=6, d_out=3, cell=cell, d_hidden=12, num_layers=2).eval()
    ref = copy.deepcopy(model)
    prune_(model, StructuredConfig(0.5))
    assert model.config.d_hidden == 6 and model.rnn.hidden_size == 6
    gates = {"lstm": 4, "gru": 3}.get(cell, 1)
    # recover which units were kept: the pruned layer-0 hidden matrix is a sub-matrix of the original
    kept = []
    for layer in range(2):
        w_new = getattr(model.rnn, f"weight_ih_l{layer}")[:6]  # first gate's rows
        w_old = getattr(ref.rnn, f"weight_ih_l{layer}")[:12]
        if layer:
            w_old = w_old[:, kept[0]]
        idx = [int((w_old - r).abs().sum(1).argmin()) for r in w_new]
        kept.append(torch.tensor(idx))
    with torch.no_grad():
        for layer, keep in enumerate(kept):
            drop = torch.tensor([j for j in range(12) if j not in set(keep.tolist())])
            rows = torch.cat([g * 12 + drop for g in range(gates)])
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(ref.rnn, f"{name}_l{layer}")[rows] = 0
    x = torch.randn(2, 40, 6)
    torch.testing.assert_close(model.forward_steps(x), ref.forward_steps(x), atol=1e-5, rtol=1e-5)
    step = edgeseq.convert(model)
    assert edgeseq.check_parity(model, step, torch.randn(1, 2000, 6)).max_abs_error < 1e-4


def test_aaren_structured_equals_zeroed_heads_and_units(tmp_path):
    """Removing heads and FF units == zeroing their columns in the output projection and the second FF matrix
    (what they write into the residual stream); the step form of the smaller model keeps parity, with a smaller state."""
    model = edgeseq.build("aaren", d_in=5, d_out=3, d_model=16, n_heads=4, n_layers=2, d_ff=24).eval()
    ref = copy.deepcopy(model)
    prune_(model, StructuredConfig(0.5))
    c = model.config
    assert (c.n_heads, c.head_width, c.d_ff, c.d_model) == (2, 4, 12, 16)
    with torch.no_grad():
        for old, new in zip(ref.blocks, model.blocks):
            heads = [int((old.attn.query - q).abs().sum(1).argmin()) for q in new.attn.query]  # kept heads, in order
            units = [int((old.ff[0].weight - r).abs().sum(1).argmin()) for r in new.ff[0].weight]
            assert len(set(heads)) == 2 and len(set(units)) == 12
            for h in set(range(4)) - set(heads):
                old.attn.out.weight[:, h * 4:(h + 1) * 4] = 0
            old.ff[2].weight[:, sorted(set(range(24)) - set(units))] = 0
    x = torch.randn(2, 30, 5)
    torch.testing.assert_close(model.forward_steps(x), ref.forward_steps(x), atol=1e-5, rtol=1e-5)
    step = edgeseq.convert(model)
    assert step.state_spec.bytes_per_stream == edgeseq.convert(ref).state_spec.bytes_per_stream // 2
    assert edgeseq.check_parity(model, step, torch.randn(1, 2000, 5)).max_abs_error < 1e-4
    edgeseq.save(model, tmp_path / "a")  # the pruned shape (head_width) survives a save and load
    back = edgeseq.load(tmp_path / "a")
    assert back.config == model.config
    torch.testing.assert_close(back.eval().forward_steps(x), model.forward_steps(x))


def test_mamba1_structured_equals_zeroed_channels(tmp_path):
    """Removing inner channels == zeroing their columns in out_proj (their output) and in x_proj (their share of dt,
    B and C); the smaller model's step keeps parity, with a smaller state."""
    model = edgeseq.build("mamba", d_in=5, d_out=3, d_model=16, n_layers=2, d_state=4).eval()
    ref = copy.deepcopy(model)
    prune_(model, StructuredConfig(0.5))
    assert model.config.d_inner == 16 and model.config.inner_width == 16 and model.config.d_model == 16
    with torch.no_grad():
        for old, new in zip(ref.layers, model.layers):
            # the kept channels: the pruned x-half rows of in_proj are rows of the original's
            kept = [int((old.mixer.in_proj.weight[:32] - w).abs().sum(1).argmin()) for w in new.mixer.in_proj.weight[:16]]
            assert len(set(kept)) == 16
            drop = sorted(set(range(32)) - set(kept))
            old.mixer.out_proj.weight[:, drop] = 0
            old.mixer.x_proj.weight[:, drop] = 0
    x = torch.randn(2, 30, 5)
    torch.testing.assert_close(model.forward_steps(x), ref.forward_steps(x), atol=1e-5, rtol=1e-5)
    step = edgeseq.convert(model)
    assert step.state_spec.bytes_per_stream < edgeseq.convert(ref).state_spec.bytes_per_stream
    assert edgeseq.check_parity(model, step, torch.randn(1, 2000, 5)).max_abs_error < 1e-4
    edgeseq.save(model, tmp_path / "m")
    assert edgeseq.load(tmp_path / "m").config == model.config


class _KeptGroupNorm(nn.Module):
    """The test's reference for a pruned Mamba-2 norm: the original gated RMSNorm, but each group's mean taken over
    the kept channels only and the dropped channels' outputs set to 0."""

    def __init__(self, norm, keep_mask):
        super().__init__()
        self.norm, self.mask = norm, keep_mask.float()

    def forward(self, y, z):
        G = self.norm.groups
        g = (y * nn.functional.silu(z) * self.mask).unflatten(-1, (G, -1))
        m = self.mask.unflatten(-1, (G, -1))
        ms = g.pow(2).sum(-1, keepdim=True) / m.sum(-1, keepdim=True)
        return (g * torch.rsqrt(ms + self.norm.eps)).flatten(-2) * self.norm.weight


@pytest.mark.parametrize("groups", [1, 2])
def test_mamba2_structured_equals_original_on_kept_heads(tmp_path, groups):
    """Removing Mamba-2 heads (the same number per group) == the original model whose gated norm averages over the
    kept heads' channels only and outputs 0 on the dropped ones (heads interact nowhere else: B and C are kept
    whole); the step keeps parity with a smaller state, and the shape survives save/load."""
    torch.manual_seed(0)
    model = edgeseq.build("mamba", d_in=5, d_out=3, d_model=16, n_layers=2, d_state=4, variant="mamba2", head_dim=4,
                          n_groups=groups).eval()  # E = 32: 8 heads of 4 channels
    ref = copy.deepcopy(model)
    prune_(model, StructuredConfig(0.5))
    c = model.config
    assert (c.d_inner, c.n_heads, c.n_groups, c.inner_width) == (16, 4, groups, 16)
    for old, new in zip(ref.layers, model.layers):
        E, cd = 32, ref.config.conv_dim
        dt_rows = old.mixer.in_proj.weight[E + cd:]
        heads = [int((dt_rows - w).abs().sum(1).argmin()) for w in new.mixer.in_proj.weight[16 + c.conv_dim:]]
        assert len(set(heads)) == 4
        per_group = 8 // groups
        assert all(sum(1 for h in heads if h // per_group == g) == 4 // groups for g in range(groups))
        mask = torch.zeros(E, dtype=torch.bool)
        for h in heads:
            mask[h * 4: (h + 1) * 4] = True
        old.mixer.norm = _KeptGroupNorm(old.mixer.norm, mask)
    x = torch.randn(2, 40, 5)
    torch.testing.assert_close(model.forward_steps(x), ref.forward_steps(x), atol=1e-5, rtol=1e-5)
    step = edgeseq.convert(model)
    assert step.state_spec.bytes_per_stream < edgeseq.convert(edgeseq.build(
        "mamba", d_in=5, d_out=3, d_model=16, n_layers=2, d_state=4, variant="mamba2", head_dim=4,
        n_groups=groups)).state_spec.bytes_per_stream
    assert edgeseq.check_parity(model, step, torch.randn(1, 2000, 5)).max_abs_error < 1e-4
    edgeseq.save(model, tmp_path / "m")
    back = edgeseq.load(tmp_path / "m")
    assert back.config == model.config
    torch.testing.assert_close(back.eval().forward_steps(x), model.forward_steps(x))


@pytest.mark.parametrize("kw,widths", [
    (dict(channels=(24, 24, 48), pool="max", padding="same"), (12, 12, 24)),  # a residual pair shares one kept set
    (dict(d_in=12, channels=(24, 32)), (13, 16)),  # 12 would equal d_in and make level 0 residual: 13
    (dict(residual=False, pool="avg"), (16, 16, 16)),
])
def test_continual_structured_equals_zeroed_channels(tmp_path, kw, widths):
    """Removing a temporal CNN's channels == zeroing their output rows and biases in the original (a removed
    channel is then relu(0) = 0 everywhere: in residual sums, pooling and every reader); residual levels stay
    residual; the converted continual step keeps parity with the pruned offline model over 2,000 frames."""
    torch.manual_seed(0)
    kw = {"d_in": 4, "d_out": 3, **kw}
    model = edgeseq.build("continual", **kw).eval()
    ref = copy.deepcopy(model)
    prune_(model, StructuredConfig(0.5))
    assert model.config.channels == widths

    def convs(m):
        return [mod for mod in m.net.modules() if isinstance(mod, nn.Conv1d)][:-1]

    with torch.no_grad():
        for old, new in zip(convs(ref), convs(model)):  # kept channels found by their (distinct) biases
            kept = {int((old.bias - b).abs().argmin()) for b in new.bias}
            assert len(kept) == len(new.bias)
            drop = sorted(set(range(len(old.bias))) - kept)
            old.weight[drop] = 0
            old.bias[drop] = 0
    n_res = lambda m: sum(type(mod).__name__ == "Residual" for mod in m.net)  # noqa: E731
    assert n_res(model) == n_res(ref)
    x = torch.randn(2, 60, kw["d_in"])
    torch.testing.assert_close(model.forward_steps(x), ref.forward_steps(x), atol=1e-5, rtol=1e-5)
    step = edgeseq.convert(model)
    assert edgeseq.check_parity(model, step, torch.randn(1, 2000, kw["d_in"])).max_abs_error < 1e-4
    edgeseq.save(model, tmp_path / "c")
    back = edgeseq.load(tmp_path / "c")
    assert back.config == model.config
    torch.testing.assert_close(back.eval().forward_steps(x), model.forward_steps(x))


@pytest.mark.parametrize("family,kw,config,shape", [
    ("rnn", dict(d_hidden=32), StructuredConfig(0.5), ("d_hidden", 16)),
    ("rnn", dict(d_hidden=32), UnstructuredConfig(0.8), ("d_hidden", 32)),
    ("continual", dict(channels=(16, 16)), StructuredConfig(0.5), ("channels", (8, 8))),
])
def test_finetune_recovers_accuracy_on_real_data(family, kw, config, shape):
    """A model trained briefly on JapaneseVowels, pruned hard: fine-tuning on the same data must win back test
    accuracy that pruning lost (measured, seed 0: rnn structured 0.51 -> 0.65, unstructured 80% 0.34 -> 0.68,
    continual structured 0.35 -> 0.57), keep the pruned weights at zero, and record what it did."""
    from edgeseq.data import load_dataset
    from edgeseq.train import TrainConfig, evaluate, fit

    ds = load_dataset("japanese-vowels")
    torch.manual_seed(0)
    model = edgeseq.build(family, d_in=12, d_out=9, task="classify", **kw)
    fit(model, ds, TrainConfig(epochs=6, seed=0))
    trained = evaluate(model, "classify", ds.test)["accuracy"]
    pruned = evaluate(prune_(copy.deepcopy(model), config), "classify", ds.test)["accuracy"]
    prune_(model, config, data="japanese-vowels", finetune_epochs=2)
    tuned = evaluate(model, "classify", ds.test)["accuracy"]
    assert pruned < trained - 0.1, (trained, pruned)  # the pruning hurt: something to recover
    assert tuned > pruned + 0.1, (pruned, tuned)
    assert model.pruning["finetune"] == {"data": "japanese-vowels", "epochs": 2, "metrics": {"accuracy": tuned}}
    assert getattr(model.config, shape[0]) == shape[1]
    if config.method == "unstructured":
        assert sparsity(model) >= 0.8 - 1e-3 and model.pruning["sparsity"] == sparsity(model)


def test_nm_and_unstructured_masks():
    model = edgeseq.build("rnn", d_in=8, d_out=4, d_hidden=16)
    prune_(model, NMConfig(n=2, m=4))
    for name, w in model.named_parameters():
        if w.dim() == 2:
            assert ((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) <= 2).all(), name
    assert sparsity(model) == pytest.approx(0.5, abs=0.01)
    m2 = edgeseq.build("rnn", d_in=8, d_out=4, d_hidden=16)
    prune_(m2, UnstructuredConfig(0.7, scope="layer"))
    for w in (m2.rnn.weight_ih_l0, m2.rnn.weight_hh_l0, m2.head.weight):
        assert float((w == 0).float().mean()) == pytest.approx(0.7, abs=0.02)
    m3 = edgeseq.build("rnn", d_in=8, d_out=4, d_hidden=16)
    prune_(m3, UnstructuredConfig(0.6))
    assert sparsity(m3) == pytest.approx(0.6, abs=0.01)


def test_two_four_pruned_tensorrt_file_asks_for_sparse_kernels(tmp_path):
    """A 2:4-pruned step exported for TensorRT says in its manifest to build with SPARSE_WEIGHTS; an
    unstructured-pruned one does not; the ONNX graph keeps the zeros 2:4 along the input dimension."""
    import warnings

    import onnx
    from onnx import numpy_helper

    for config, sparse in ((NMConfig(n=2, m=4), True), (UnstructuredConfig(0.5), False)):
        torch.manual_seed(0)
        model = edgeseq.build("rnn", d_in=8, d_out=4, d_hidden=16)
        prune_(model, config)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            art = edgeseq.export(edgeseq.convert(model), tmp_path / config.method.replace(":", ""), target="tensorrt", steps=50)
        assert ("sparse_weights" in art.manifest["runtime"]) == sparse
        if sparse:
            mats = [numpy_helper.to_array(i) for i in onnx.load(str(art.path)).graph.initializer if len(i.dims) == 2]
            assert len(mats) == 2 and all(((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) <= 2).all() for w in mats)


def test_refusals():
    with pytest.raises(ConfigError, match="4 heads in 4 groups"):
        prune_(edgeseq.build("mamba", d_in=4, d_out=2, d_model=16, n_layers=1, variant="mamba2", head_dim=8, n_groups=4),
               StructuredConfig(0.5))
    from edgeseq.models.continual import OfflineModel

    with pytest.raises(ConfigError, match="no rewriter for OfflineModel; it supports: RNNModel, AarenModel, MambaModel, "
                                          "TemporalCNN"):
        prune_(OfflineModel(nn.Sequential(nn.Conv1d(4, 4, 3)), 4), StructuredConfig(0.5))
    with pytest.raises(ConfigError, match="amount must be in"):
        StructuredConfig(1.5)
    with pytest.raises(ConfigError, match="not multiples of 4"):
        prune_(edgeseq.build("rnn", d_in=6, d_out=2, d_hidden=8), NMConfig())


def test_cli_prune_then_quantize(tmp_path):
    torch.manual_seed(0)
    model = edgeseq.build("rnn", d_in=12, d_out=9, d_hidden=16, task="classify")
    edgeseq.save(model, tmp_path / "m")
    r = CliRunner().invoke(app, ["prune", str(tmp_path / "m"), "--method", "structured", "--amount", "0.5",
                                 "--finetune-epochs", "1", "--out", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    assert "parameters" in r.output and edgeseq.load(tmp_path / "p").config.d_hidden == 8
    r = CliRunner().invoke(app, ["quantize", str(tmp_path / "p"), "--scheme", "int8-dynamic", "--target", "onnx",
                                 "--eval", "--eval-steps", "300", "--steps", "300", "--out", str(tmp_path / "q")])
    assert r.exit_code == 0, r.output
    import json

    man = json.loads((tmp_path / "q.onnx.edgeseq.json").read_text())
    assert man["pruning"]["config"]["method"] == "structured"
    assert man["quantization"]["config"]["weights"] == "uint8" and man["quantization"]["drift"]["steps"] == 300
    assert (tmp_path / "q.onnx.drift.svg").read_text().startswith("<svg")
    r = CliRunner().invoke(app, ["inspect", str(tmp_path / "q.onnx")])
    assert r.exit_code == 0 and "int8-dynamic (state: h0=float32, c0=float32, checked on the graph)" in " ".join(r.output.split())
    assert "structured 50%" in r.output
    r = CliRunner().invoke(app, ["quantize", str(tmp_path / "p"), "--scheme", "fp16", "--target", "onnx", "--out", str(tmp_path / "z")])
    assert r.exit_code == 1 and "onnx runs: int8-dynamic, int8-static" in r.output
    assert not list(tmp_path.glob("z*"))


@pytest.mark.parametrize("graph", ["erdos-renyi", "watts-strogatz"])
def test_random_graph_masks(graph):
    """Density as asked; the recurrent matrix masks every gate with the same unit-to-unit graph; a Watts-Strogatz
    graph without rewiring is the ring lattice (each unit links to its k nearest units)."""
    from edgeseq.quant import RandomGraphConfig
    from edgeseq.quant.prune_random_graph import graph_mask

    model = edgeseq.build("rnn", d_in=8, d_out=4, d_hidden=40)
    prune_(model, RandomGraphConfig(0.75, graph=graph))
    whh = model.rnn.weight_hh_l0
    nz = (whh != 0).float().reshape(4, 40, 40)
    assert (nz == nz[0]).all()
    assert float(nz[0].mean()) == pytest.approx(0.25, abs=0.05)
    ring = graph_mask(10, 10, 0.3, "watts-strogatz", 0.0, torch.Generator().manual_seed(0))
    for i in range(10):
        assert sorted(ring[i].nonzero().flatten().tolist()) == sorted({(i + j - 1) % 10 for j in range(3)})
