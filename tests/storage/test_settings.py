"""Settings are validated before anything is created or persisted (seqvault/settings.py)."""

from __future__ import annotations

import numpy as np
import pytest

from seqvault import SeqVault
from seqvault.errors import SettingsError, ValidationError
from seqvault.settings import DEFAULTS, SETTINGS, effective, validate

from ..conftest import make_events

BAD = [
    ("segment_events", 0, "out of range"),
    ("memtable_events", -1, "out of range"),
    ("zstd_level", 99, "out of range"),
    ("durability", "fast", "is not one of"),
    ("tail_events", 1.5, "not an integer"),
    ("merge_duty", 0.0, "out of range"),
    ("reclaim_ratio", True, "not a number"),
    ("max_file_bytes", 1 << 33, "out of range"),
]


@pytest.mark.parametrize(("name", "value", "words"), BAD)
def test_a_bad_setting_creates_nothing(tmp_path, schema, name, value, words):
    store = tmp_path / "new"
    with pytest.raises(SettingsError) as err:
        SeqVault.open(store, schema=schema, **{name: value})
    msg = str(err.value)
    assert name in msg and repr(value) in msg and words in msg
    assert err.value.setting == name and err.value.value == value
    assert not store.exists()  # not even the directory


@pytest.mark.parametrize(("name", "value", "words"), BAD)
def test_a_bad_setting_on_reopen_changes_nothing(tmp_path, schema, name, value, words):
    store = tmp_path / "s"
    with SeqVault.open(store, schema=schema) as v:
        v.append(1, make_events(np.random.default_rng(0), 1))
    with pytest.raises(SettingsError):
        SeqVault.open(store, **{name: value})
    with SeqVault.open(store) as v:  # the store still opens with what it had
        assert v.settings[name] == DEFAULTS[name]
        assert len(v.read(1)) == 1


def test_unknown_setting_is_named(tmp_path, schema):
    with pytest.raises(SettingsError, match="segmnet_events"):
        SeqVault.open(tmp_path / "s", schema=schema, segmnet_events=5)
    assert not (tmp_path / "s").exists()


def test_settings_error_is_a_validation_error_and_a_value_error():
    # Exit code 3 in the CLI (ValidationError); callers that caught ValueError still do.
    with pytest.raises(ValidationError):
        validate({"zstd_level": 99})
    with pytest.raises(ValueError):
        validate({"zstd_level": 99})


def test_good_settings_persist_and_reopen_keeps_them(tmp_path, schema):
    store = tmp_path / "s"
    SeqVault.open(store, schema=schema, segment_events=7, durability="none").close()
    with SeqVault.open(store) as v:
        assert v.settings["segment_events"] == 7 and v.settings["durability"] == "none"
    with SeqVault.open(store, read_only=True, refresh_interval=9.0) as r:
        # a reader keeps its own refresh_interval and the store's other settings
        assert r.settings["refresh_interval"] == 9.0 and r.settings["segment_events"] == 7
    with SeqVault.open(store) as v:
        assert v.settings["refresh_interval"] == DEFAULTS["refresh_interval"]


def test_every_setting_has_a_valid_default_and_a_doc():
    assert validate(DEFAULTS) == DEFAULTS
    assert all(s.doc for s in SETTINGS.values())


def test_a_bad_stored_value_is_refused_by_name():
    # A store written by an older SeqVault that accepted a bad value opens with a message.
    with pytest.raises(SettingsError, match="segment_events"):
        effective({"segment_events": 0}, {})
