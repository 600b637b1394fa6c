"""Removal effects against a brute-force reference: each session run alone as a new, shorter session of its
remaining events (the gap closed: positions 1..k), the way the model sees a session in which those events
never happened; and the ensemble's members, each against its own single-model run."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from attribution.features import encode_sessions
from attribution.model import to_tensors
from attribution.removal import (
    empty_probability,
    ensemble_mean,
    key_codes,
    position_codes,
    removal_effects,
    sampled,
)
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
    """P(convert) of session ``row`` alone, rebuilt from only the events of ``keep`` (their tokens and
    features, in order, as a session of that many events); the empty session when none."""
    if not keep.any():
        return empty_probability(model, "cpu")
    tokens, cont, _ = to_tensors(enc.batch([row]), model.spec.fields)
    kept = torch.from_numpy(np.flatnonzero(keep))
    tokens = {f: t[:, kept] for f, t in tokens.items()}
    with torch.no_grad():
        logit = model(tokens, cont[:, kept], torch.ones(1, len(kept), dtype=torch.bool))
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
    members = removal_effects(model, enc, keys, selected, max_positions=300)  # small: many forward batches
    assert all(v.shape == (1, int(enc.offsets[-1])) for v in members.values())
    out = {dim: v[0] for dim, v in members.items()}
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


def test_each_member_of_an_ensemble_gets_its_own_removal_effects_and_the_mean_is_published(setup):
    """Two different networks: the ensemble's rows are each network's removal effects alone, they differ,
    and the published value is their mean, null (NaN) exactly where both are."""
    model, table, enc = setup
    other = random_model(vocab_of(table), max_length=64, seed=9, std=0.2, **SMALL_MODEL)
    for p in other.parameters():
        p.requires_grad_(False)
    keys = {"event_type": key_codes(table.column("event_types")), "position_bin": position_codes(enc.offsets)}
    selected = np.arange(len(enc)) % 2 == 0
    both = removal_effects([model, other], enc, keys, selected)
    for i, network in enumerate((model, other)):
        alone = removal_effects(network, enc, keys, selected)
        for dim in keys:
            np.testing.assert_allclose(both[dim][i], alone[dim][0], atol=1e-9, equal_nan=True)
    d = both["event_type"]
    present = ~np.isnan(d[0])
    assert present.any() and (~present).any() and np.array_equal(present, ~np.isnan(d[1]))
    assert np.abs(d[0, present] - d[1, present]).max() > 1e-3  # the members differ
    mean = ensemble_mean(d)
    np.testing.assert_allclose(mean[present], (d[0, present] + d[1, present]) / 2)
    assert np.isnan(mean[~present]).all()


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def test_pair_interactions_equal_the_brute_force_reference(setup):
    """For every ordered pair asked for, in every sampled session with an a before a b: R(a and b) - R(a) -
    R(b), in P(convert) and on the logit, each removal rebuilt as a new, shorter session. Sessions without
    the order (only b before a) get no entry, and (a, b) and (b, a) share the joint removal."""
    model, table, enc = setup
    other = random_model(vocab_of(table), max_length=64, seed=9, std=0.2, **SMALL_MODEL)
    for p in other.parameters():
        p.requires_grad_(False)
    codes = key_codes(table.column("event_types"))
    types = np.unique(codes)
    a, b, c = (int(t) for t in types[:3])
    pairs = [(a, b), (b, a), (a, c)]
    selected = np.arange(len(enc)) % 4 != 2
    found: list = []
    removal_effects([model, other], enc, {"event_type": codes}, selected, pairs=pairs, pairs_out=found)
    got = {(f.row, f.pair): f for f in found}
    expected_entries = 0
    for row in range(len(enc)):
        lo, length = int(enc.offsets[row]), int(enc.lengths[row])
        s = codes[lo : lo + length]
        for index, (x, y) in enumerate(pairs):
            at_x, at_y = np.flatnonzero(s == x), np.flatnonzero(s == y)
            ordered = len(at_x) > 0 and len(at_y) > 0 and at_x[0] < at_y[-1]
            if not (selected[row] and ordered):
                assert (row, index) not in got, (row, index)
                continue
            expected_entries += 1
            f = got[(row, index)]
            for m, network in enumerate((model, other)):
                full = _p(network, enc, row, np.ones(length, bool))
                no_x, no_y = _p(network, enc, row, s != x), _p(network, enc, row, s != y)
                neither = _p(network, enc, row, (s != x) & (s != y))
                r_both, r_x, r_y = full - neither, full - no_x, full - no_y
                assert np.isclose(f.probability[m], r_both - r_x - r_y, atol=1e-6), (row, index, m)
                lo_both = _logit(full) - _logit(neither)
                lo_x, lo_y = _logit(full) - _logit(no_x), _logit(full) - _logit(no_y)
                assert np.isclose(f.log_odds[m], lo_both - lo_x - lo_y, atol=1e-4), (row, index, m)
    assert expected_entries > 10 and len(found) == expected_entries
    assert any((r, 0) in got and (r, 1) in got for r in range(len(enc)))  # both orders in one session
