"""TensorRT: engines built from the `tensorrt` target's ONNX files (float, and int8-static in explicit-quantization
form) stream like the file's onnxruntime reference, with the state fed back.

Skipped, saying so, without TensorRT and an NVIDIA GPU (CI has neither; scripts/gpu-check.sh runs these where a
lent machine has them). TensorRT 10's name-based tensor API."""

import importlib.util
import warnings

import numpy as np
import pytest
import torch

import edgeseq

pytestmark = [
    pytest.mark.tensorrt,
    pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="needs TensorRT; not installed here"),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU with CUDA; none on this machine"),
]
STEPS = 500


def _engine(path, batch: int, manifest: dict):
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(path.read_bytes()), [str(parser.get_error(i)) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    config.clear_flag(trt.BuilderFlag.TF32)  # float32 as float32 (TF32 is on by default on Ampere and later)
    if manifest["runtime"].get("sparse_weights"):  # a 2:4-pruned step: let TensorRT pick sparse kernels
        config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        shape = (batch, *tuple(t.shape)[1:])
        profile.set_shape(t.name, shape, shape, shape)
    config.add_optimization_profile(profile)
    blob = builder.build_serialized_network(network, config)
    assert blob is not None, "TensorRT could not build an engine from the file"
    return trt.Runtime(logger).deserialize_cuda_engine(blob)


def _stream_engine(engine, manifest, xs: np.ndarray) -> np.ndarray:
    import tensorrt as trt

    ctx = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    batch = xs.shape[1]
    state = {f"state_{t['name']}": torch.zeros((batch, *t["shape"]), device="cuda") for t in manifest["state_spec"]["tensors"]}
    ys = []
    for x in xs:
        feeds = {"x": torch.from_numpy(x).cuda(), **state}
        for n in inputs:
            ctx.set_input_shape(n, tuple(feeds[n].shape))
            ctx.set_tensor_address(n, feeds[n].data_ptr())
        outs = {n: torch.empty(tuple(ctx.get_tensor_shape(n)), device="cuda") for n in names if n not in inputs}
        for n, t in outs.items():
            ctx.set_tensor_address(n, t.data_ptr())
        stream = torch.cuda.current_stream()
        assert ctx.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        ys.append(outs["y"].cpu().numpy())
        state = {n: outs[f"next_{n}"] for n in state}
    return np.stack(ys)


@pytest.mark.parametrize("quantized,sparse", [(False, False), (True, False), (False, True)])
def test_tensorrt_engine_streams_like_the_onnx_reference(tmp_path, quantized, sparse):
    from edgeseq.quant import Int8StaticConfig, NMConfig, prune_, quantize_

    torch.manual_seed(0)
    model = edgeseq.build("rnn", d_in=12, d_out=9, cell="lstm", d_hidden=64)
    if sparse:
        prune_(model, NMConfig(n=2, m=4))
    step = edgeseq.convert(model)
    if quantized:
        step = quantize_(step, Int8StaticConfig(activations="symmetric"), calib="japanese-vowels", target="tensorrt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = edgeseq.export(step, tmp_path / "m", target="tensorrt", steps=STEPS)
    assert ("sparse_weights" in art.manifest["runtime"]) == sparse
    xs = np.random.default_rng(0).standard_normal((STEPS, 2, 12)).astype(np.float32)
    ref = edgeseq.open(art.path, batch=2).run(xs)  # onnxruntime, each Q/DQ as written
    got = _stream_engine(_engine(art.path, 2, art.manifest), art.manifest, xs)
    err = float(np.abs(got - ref).max())
    print(f"tensorrt engine vs onnxruntime reference over {STEPS} steps ({'int8' if quantized else 'fp32'}): {err:.3g}")
    # fp32: float rounding only; int8: the scheme's tolerance (an output step moved now and then, carried on)
    assert err <= (art.parity["tolerance"] if quantized else 1e-4), err
