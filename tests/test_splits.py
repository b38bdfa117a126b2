"""k-fold splits: every subject private exactly once; attack sets never hold private ids."""

import pytest

from napari_invert.study.splits import make_splits, splits_document


def test_paper_protocol_40_subjects_4_folds():
    ids = [f"S{i:02d}" for i in range(1, 41)]
    folds = make_splits(ids, 4, seed=0)
    assert [len(f.private) for f in folds] == [10, 10, 10, 10]
    assert all(len(f.attack) == 30 for f in folds)
    privates = [s for f in folds for s in f.private]
    assert sorted(privates) == ids  # each subject private exactly once
    for f in folds:
        assert not set(f.private) & set(f.attack)
        assert set(f.private) | set(f.attack) == set(ids)


def test_seeded_and_recorded():
    ids = [f"S{i:02d}" for i in range(12)]
    assert make_splits(ids, 3, 7) == make_splits(ids, 3, 7)
    assert make_splits(ids, 3, 7) != make_splits(ids, 3, 8)
    doc = splits_document(make_splits(ids, 3, 7), 7)
    assert doc["seed"] == 7 and doc["n_folds"] == 3 and len(doc["folds"]) == 3


def test_uneven_and_invalid():
    folds = make_splits([str(i) for i in range(10)], 4, 0)
    assert sorted(len(f.private) for f in folds) == [2, 2, 3, 3]
    with pytest.raises(ValueError, match="too few"):
        make_splits(["a", "b"], 2, 0)
    with pytest.raises(ValueError, match="not unique"):
        make_splits(["a", "a", "b"], 2, 0)
