import numpy as np
import pytest
import torch

import edgeseq
from edgeseq.errors import ArtifactError
from edgeseq.manifest import read


def test_pte_is_delegated_and_validated(artifacts):
    art = artifacts["executorch"]
    assert art.path.suffix == ".pte" and art.path.read_bytes()[4:8] == b"ET12"
    m = read(art.manifest_path)
    g = m["graph"]
    assert m["runtime"]["backend"] == "xnnpack" and m["batch"] == 1
    assert g["partitions"] >= 1 and g["delegated_fraction"] >= 0.9, g
    assert "linear" in g["delegated"] and not any("lstm" in k for k in g["delegated"] | g["non_delegated"])
    assert m["parity"]["steps"] == 1000 and m["parity"]["max_abs_error"] < 1e-5
    assert g["planned_arena_bytes"] > 0


def test_executorch_stream_matches_parallel_form(artifacts):
    sess = edgeseq.open(artifacts["executorch"].path)
    x = torch.randn(1, 2000, 5)
    with pytest.warns(UserWarning):
        got = np.stack([sess.push(x[0, t].numpy()) for t in range(2000)])  # (T, d_out) for 1-D input
    with torch.no_grad():
        ref = artifacts["model"](x)[0].numpy()
    assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-5


def test_fixed_batch_is_enforced(artifacts):
    with pytest.raises(ArtifactError, match="exported for batch 1; got batch 2"):
        edgeseq.open(artifacts["executorch"].path, batch=2)
