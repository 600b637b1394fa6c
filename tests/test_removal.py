"""Removal effects against a brute-force reference: each session run alone with the key's events masked as
padding, the way the model sees a shorter session."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from attribution.features import encode_sessions
from attribution.model import to_tensors
from attribution.removal import empty_probability, key_codes, position_codes, removal_effects, sampled
from tests.helpers import SMALL_MODEL, random_model, synthetic_sessions, vocab_of


@pytest.fixture(scope="module")
def setup():
    table = synthetic_sessions(30, seed=5, max_len=60, full=True)
    vocab = vocab_of(table)
    model = random_model(vocab, max_length=64, seed=2, std=0.2, **SMALL_MODEL)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, table, encode_sessions(table, vocab)


def _p(model, enc, row: int, keep: np.ndarray) -> float:
    """P(convert) of session ``row`` alone, with only the events of ``keep``; the empty session when none."""
    if not keep.any():
        return empty_probability(model, "cpu")
    tokens, cont, mask = to_tensors(enc.batch([row]), model.spec.fields)
    mask = mask & torch.from_numpy(keep)[None, :]
    with torch.no_grad():
        logit, _ = model.forward_from_representation(model.represent(tokens, cont), mask)
    return float(torch.sigmoid(logit)[0])


def test_position_codes_by_hand():
    offsets = np.array([0, 3, 3, 60])  # a session of 3 events, an empty one, one of 57
    codes = position_codes(offsets)
    assert codes[:3].tolist() == [0, 0, 0]
    second = codes[3:]  # positions 1..57
    assert second[[0, 4, 5, 9, 10, 19, 20, 49, 50, 56]].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_key_codes_map_equal_values_to_one_code_and_null_to_minus_one():
    col = pa.array([["a", None, "b"], ["b", "a"]], pa.list_(pa.string()))
    codes = key_codes(col)
    assert codes[1] == -1
    assert codes[0] == codes[4] and codes[2] == codes[3] and codes[0] != codes[2]


def test_sample_is_a_stable_share_of_sessions():
    ids = [f"s{i}" for i in range(4000)]
    picked = sampled(ids, 0.25)
    assert 0.22 < picked.mean() < 0.28
    assert np.array_equal(picked, sampled(list(reversed(ids)), 0.25)[::-1])  # by id, not by place
    assert sampled(ids, 1.0).all() and not sampled(ids, 0.0).any()


def test_removal_effects_equal_the_brute_force_reference(setup):
    model, table, enc = setup
    keys = {
        "event_type": key_codes(table.column("event_types")),
        "position_bin": position_codes(enc.offsets),
        "store": key_codes(table.column("store_ids")),
    }
    selected = np.arange(len(enc)) % 3 != 1
    out = removal_effects(model, enc, keys, selected, max_positions=300)  # small: many forward batches
    checked = 0
    for row in range(len(enc)):
        lo, length = int(enc.offsets[row]), int(enc.lengths[row])
        for dim, codes in keys.items():
            got = out[dim][lo : lo + length]
            c = codes[lo : lo + length]
            if not selected[row]:
                assert np.isnan(got).all()
                continue
            assert np.isnan(got[c < 0]).all()  # events without a store have no store key
            p_full = _p(model, enc, row, np.ones(length, bool))
            for key in np.unique(c[c >= 0]):
                expected = p_full - _p(model, enc, row, c != key)
                assert np.allclose(got[c == key], expected, atol=1e-6), (row, dim, key)
                checked += 1
    assert checked > 100
