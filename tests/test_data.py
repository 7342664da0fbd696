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
