"""The writer's slot-owner memory (seqvault/owners.py) against a plain dict: a slot is
remembered as the key last claimed there, whether it was claimed one at a time (the dict) or
by a many-user flush (the sorted arrays), and the later claim wins."""

from __future__ import annotations

import numpy as np
import pytest

from seqvault import owners as owners_mod
from seqvault.owners import Owners, int_key_bytes


def test_lookups_follow_the_last_claim_whichever_store_holds_it():
    o = Owners()
    o.set_int(np.array([30, 10, 20], dtype=np.uint64), np.array([3, 1, 2]))
    assert o.get(10) == int_key_bytes(1) and o.get(20) == int_key_bytes(2)
    assert o.get(15) is None
    o.set(20, int_key_bytes(7))  # a later single claim of slot 20 by another key
    assert o.get(20) == int_key_bytes(7)
    assert o.known_int(np.array([10, 20, 20, 40], dtype=np.uint64),
                       np.array([1, 2, 7, 4])).tolist() == [True, False, True, False]
    o.set_int(np.array([20, 40], dtype=np.uint64), np.array([2, 4]))  # and a flush after it
    assert o.get(20) == int_key_bytes(2) and o.get(40) == int_key_bytes(4)
    assert o.known_int(np.array([20, 40], dtype=np.uint64), np.array([2, 4])).all()
    assert len(o) == 4


@pytest.mark.parametrize("caps", [(1 << 20, 1 << 20), (400, 50)])
@pytest.mark.parametrize("seed", range(4))
def test_random_claims_never_give_a_wrong_owner(seed, caps, monkeypatch):
    # Sound always: a remembered owner is the key claimed there last. Complete below the caps:
    # every claimed slot is remembered. (With small caps the stores clear on the way.)
    monkeypatch.setattr(owners_mod, "ARRAY_CAP", caps[0])
    monkeypatch.setattr(owners_mod, "DICT_CAP", caps[1])
    rng = np.random.default_rng(seed)
    o, model = Owners(), {}
    for _ in range(300):
        if rng.random() < 0.4:
            h, k = int(rng.integers(0, 500)), int(rng.integers(-5, 5))
            o.set(h, int_key_bytes(k))
            model[h] = int_key_bytes(k)
        else:
            hs = rng.choice(500, size=int(rng.integers(0, 60)), replace=False).astype(np.uint64)
            ks = rng.integers(-5, 5, hs.size)
            o.set_int(hs, ks)
            model.update(zip(hs.tolist(), (int_key_bytes(k) for k in ks.tolist())))
        probe = np.arange(500, dtype=np.uint64)
        keys = rng.integers(-5, 5, probe.size)
        known = o.known_int(probe, keys).tolist()
        got = [o.get(h) for h in range(500)]
        for h, k in zip(range(500), keys.tolist()):
            assert got[h] in (model.get(h), None), h
            assert not known[h] or model.get(h) == int_key_bytes(k), h
            if caps[0] > 1000:
                assert got[h] == model.get(h)
                assert known[h] == (model.get(h) == int_key_bytes(k))


def test_a_slot_claimed_again_one_at_a_time_does_not_come_back_when_the_dict_clears(
        monkeypatch):
    monkeypatch.setattr(owners_mod, "DICT_CAP", 4)
    o = Owners()
    o.set_int(np.array([5, 6], dtype=np.uint64), np.array([1, 2]))  # a flush: key 1 at slot 5
    o.set(5, int_key_bytes(9))  # then key 9 claims slot 5 alone (the slot was freed)
    for h in range(100, 110):  # enough single claims to clear the dict on the way
        o.set(h, int_key_bytes(h))
    assert o.get(5) in (int_key_bytes(9), None)
    assert not o.known_int(np.array([5], dtype=np.uint64), np.array([1]))[0]
