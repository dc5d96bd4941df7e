"""The store path: histories read back through SeqVault + laser_reader equal the numpy ones."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from seqvault.model.data import ArrayHistory, CachedHistory  # noqa: E402
from seqvault.model.data_synthetic import SyntheticConfig, generate  # noqa: E402
from seqvault.model.store_adapter import StoreHistory, store_available  # noqa: E402

pytestmark = pytest.mark.skipif(store_available() is not None, reason=str(store_available()))


def test_store_histories_equal_array_histories(tmp_path) -> None:
    ds = generate(SyntheticConfig.quick(n_users=120))
    imps = ds.impressions
    store = StoreHistory.build(ds, tmp_path / "store")
    arrays = ArrayHistory(ds.events)
    for max_len in (100, 7):
        a = arrays.gather(imps.user, imps.ts, max_len)
        s = store.gather(imps.user, imps.ts, max_len)
        for f in ("item", "cat", "aux", "mask"):
            assert np.array_equal(getattr(a, f), getattr(s, f)), f
    # the cache (one read per request, shared by its candidates) serves the same rows
    cached = CachedHistory(store, imps, 100)
    rows = np.arange(len(imps))[::-1]
    c, a = cached.rows(rows), arrays.gather(imps.user[rows], imps.ts[rows], 100)
    assert np.array_equal(c.item, a.item) and np.array_equal(c.mask, a.mask)
    # reopening the same directory for the same data set reuses the store
    store.close()
    again = StoreHistory.build(ds, tmp_path / "store")
    assert np.array_equal(again.gather(imps.user[:5], imps.ts[:5], 100).item,
                          arrays.gather(imps.user[:5], imps.ts[:5], 100).item)
    again.close()
    other = generate(SyntheticConfig.quick(n_users=50, seed=3))
    with pytest.raises(ValueError, match="not a store of this data set"):
        StoreHistory.build(other, tmp_path / "store")
