"""The model, the feature encoding and the artifact: invariances, attention capture, safe loading."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import pickle

import numpy as np
import pytest
import torch

from attribution.features import PAD, UNK, FeatureMismatch, Vocabularies, encode_sessions, length_buckets
from attribution.model import (
    ArtifactError,
    load_artifact,
    save_artifact,
    to_tensors,
    weights_bytes,
)
from tests.helpers import SMALL_MODEL, random_model, synthetic_sessions, vocab_of


@pytest.fixture(scope="module")
def table():
    return synthetic_sessions(40, seed=3)


@pytest.fixture(scope="module")
def vocab(table):
    return vocab_of(table)


@pytest.fixture(scope="module")
def model(vocab):
    return random_model(vocab, max_length=40, seed=0, std=0.3, **SMALL_MODEL)


def _logits(model, enc, rows, width=1, need_attention=False, all_positions=None):
    batch = enc.batch(rows, min_length=width)
    tokens, cont, mask = to_tensors(batch, model.spec.fields)
    with torch.no_grad():
        x = model.represent(tokens, cont)
        return model.forward_from_representation(x, mask, need_attention=need_attention, all_positions=all_positions)


def test_encoding_maps_values_nulls_and_unknowns(vocab):
    t = synthetic_sessions(3, seed=11)
    enc = encode_sessions(t, vocab)
    names = t.column("event_names").to_pylist()
    stores = t.column("store_ids").to_pylist()
    assert list(enc.lengths) == [len(n) for n in names]
    flat_names = [n for row in names for n in row]
    assert list(enc.tokens["event_names"]) == [vocab.tokens["event_names"].index(n) + 2 for n in flat_names]
    flat_stores = [s for row in stores for s in row]
    assert [int(i) for i, s in zip(enc.tokens["store_ids"], flat_stores, strict=True) if s is None] == [
        PAD
    ] * flat_stores.count(None)
    # a vocabulary without s0: its events become <UNK> and are counted
    smaller = Vocabularies({**vocab.tokens, "store_ids": [s for s in vocab.tokens["store_ids"] if s != "s0"]}, 1)
    enc2 = encode_sessions(t, smaller)
    assert enc2.unknown["store_ids"] == flat_stores.count("s0")
    assert sum(int(i) == UNK for i in enc2.tokens["store_ids"]) == flat_stores.count("s0")

    # continuous: the event's wait until the next event (log-scaled, capped at 3600 s; 0 for a session's
    # last event), rank, has-rank, new vertical
    def scaled(g):
        return math.log1p(min(g, 3600.0)) / math.log1p(3600.0)

    rows = t.column("seconds_from_prev").to_pylist()
    to_next = [scaled(row[i + 1]) if i + 1 < len(row) else 0.0 for row in rows for i in range(len(row))]
    np.testing.assert_allclose(enc.continuous[:, 0], to_next, rtol=1e-6)
    ranks = [r for row in t.column("event_ranks").to_pylist() for r in row]
    np.testing.assert_array_equal(enc.continuous[:, 2], [r is not None for r in ranks])
    # a model saved with the time since the previous event gets that, in its own order of features
    legacy = encode_sessions(t, vocab, ("is_new_vertical", "log_seconds_from_prev"))
    np.testing.assert_allclose(legacy.continuous[:, 1], [scaled(g) for row in rows for g in row], rtol=1e-6)
    np.testing.assert_array_equal(legacy.continuous[:, 0], enc.continuous[:, 3])
    with pytest.raises(FeatureMismatch, match="log_seconds_between"):
        encode_sessions(t, vocab, ("log_seconds_between",))


def test_encoding_refuses_misaligned_arrays_and_missing_columns(table, vocab):
    import pyarrow as pa

    bad = table.set_column(
        table.schema.get_field_index("store_ids"),
        "store_ids",
        pa.array([row[:-1] for row in table.column("store_ids").to_pylist()], pa.list_(pa.string())),
    )
    with pytest.raises(FeatureMismatch, match="store_ids"):
        encode_sessions(bad, vocab)
    with pytest.raises(FeatureMismatch, match="event_names"):
        encode_sessions(table.drop_columns(["event_names"]), vocab)


def test_padding_never_changes_a_logit(model, table, vocab):
    enc = encode_sessions(table, vocab)
    rows = np.arange(len(enc))
    tight, _ = _logits(model, enc, rows)
    padded, _ = _logits(model, enc, rows, width=40)
    torch.testing.assert_close(tight, padded, atol=1e-5, rtol=0)


def test_a_session_alone_or_in_a_batch_gives_the_same_logit(model, table, vocab):
    enc = encode_sessions(table, vocab)
    together, _ = _logits(model, enc, np.arange(len(enc)))
    alone = torch.stack([_logits(model, enc, [i])[0][0] for i in range(len(enc))])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    # and in a different batch composition (reversed, mixed lengths)
    rev, _ = _logits(model, enc, np.arange(len(enc))[::-1])
    torch.testing.assert_close(together, rev.flip(0), atol=1e-5, rtol=0)


def test_attention_capture_leaves_logits_unchanged_and_is_a_distribution(model, table, vocab):
    enc = encode_sessions(table, vocab)
    rows = np.arange(len(enc))
    plain, none = _logits(model, enc, rows)
    captured, attention = _logits(model, enc, rows, need_attention=True)
    assert none is None
    torch.testing.assert_close(plain, captured, atol=1e-5, rtol=0)
    assert len(attention) == model.spec.n_layers
    b, width = len(rows), int(enc.lengths.max())
    for layer, probs in enumerate(attention):
        # the last layer is computed for the CLS query alone (all the head reads): its first row only
        queries = 1 if layer == model.spec.n_layers - 1 else width + 1
        assert probs.shape == (b, model.spec.n_heads, queries, width + 1)
        torch.testing.assert_close(probs.sum(-1), torch.ones(b, model.spec.n_heads, queries))
        # no attention lands on padding: keys past each session's length get exactly 0
        for i, n in enumerate(enc.lengths):
            assert float(probs[i, :, :, 1 + n :].abs().sum()) == 0.0


def test_the_cls_only_last_layer_gives_the_full_computations_logits_gradients_and_attention(model, table, vocab):
    """Eval mode computes the last layer for the CLS query alone; the logit, its gradient with respect to
    every event's representation and the CLS attention row must be those of all positions computed."""
    enc = encode_sessions(table, vocab)
    batch = enc.batch(np.arange(len(enc)), min_length=int(enc.lengths.max()) + 3)  # padding too
    tokens, cont, mask = to_tensors(batch, model.spec.fields)
    with torch.no_grad():
        x = model.represent(tokens, cont)
    results = {}
    for all_positions in (True, None):
        xi = x.clone().requires_grad_(True)
        logits, attention = model.forward_from_representation(
            xi, mask, need_attention=True, all_positions=all_positions
        )
        (grad,) = torch.autograd.grad(logits.sum(), xi)
        results[all_positions] = (logits.detach(), grad, [a.detach() for a in attention])
    (full_logits, full_grad, full_att), (cls_logits, cls_grad, cls_att) = results[True], results[None]
    assert full_att[-1].shape[2] == x.shape[1] + 1 and cls_att[-1].shape[2] == 1
    torch.testing.assert_close(cls_logits, full_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(cls_grad, full_grad, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(cls_att[-1][:, :, 0], full_att[-1][:, :, 0], atol=1e-6, rtol=0)
    for a, b in zip(cls_att[:-1], full_att[:-1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    # the fused (scaled_dot_product_attention) path too
    with torch.no_grad():
        fused, _ = model.forward_from_representation(x, mask)
    torch.testing.assert_close(fused, full_logits, atol=1e-5, rtol=0)
    # training computes every position (dropout's random draws as before), whatever the layer
    model.train()
    try:
        with torch.no_grad():
            _, train_att = model.forward_from_representation(x, mask, need_attention=True)
    finally:
        model.eval()
    assert train_att[-1].shape[2] == x.shape[1] + 1


def test_the_additive_path_adds_each_events_term_and_nothing_for_padding(table, vocab):
    """With the CLS head silenced, the logit is the additive path alone: per event, sum_k (A x_i)_k *
    P[position_i]_k, computed here by hand from the weights; padding adds nothing, and an event placed at
    another position (``positions``, as removal compacts a session) is weighted by that position."""
    model = random_model(vocab, max_length=40, seed=5, std=0.3, **SMALL_MODEL)
    assert model.spec.additive_rank == 2
    with torch.no_grad():
        model.head[-1].weight.zero_()
        model.head[-1].bias.zero_()
    enc = encode_sessions(table, vocab)
    batch = enc.batch(np.arange(len(enc)), min_length=40)  # padded well past the longest session
    tokens, cont, mask = to_tensors(batch, model.spec.fields)
    with torch.no_grad():
        x = model.represent(tokens, cont)
        logits, _ = model.forward_from_representation(x, mask)
    a = model.event_value.weight.detach().numpy()  # (rank, d)
    p = model.event_position.weight.detach().numpy()  # (max_length + 1, rank)
    xs = x.numpy()
    expected = [sum(float((a @ xs[s, i]) @ p[i + 1]) for i in range(n)) for s, n in enumerate(enc.lengths)]
    np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-5, atol=1e-6)
    # gradient x input adds up to the logit exactly: the path is linear in x with no offset
    xi = x.clone().requires_grad_(True)
    out, _ = model.forward_from_representation(xi, mask)
    (grad,) = torch.autograd.grad(out.sum(), xi)
    np.testing.assert_allclose((grad * x).sum(dim=(1, 2)).numpy(), expected, rtol=1e-5, atol=1e-6)
    # one session's events placed in reverse: the first event at position n, the last at 1
    n = int(enc.lengths[0])
    assert n > 1
    moved = torch.arange(n, 0, -1)[None, :]
    with torch.no_grad():
        placed, _ = model.forward_from_representation(x[:1, :n], mask[:1, :n], positions=moved)
    want = sum(float((a @ xs[0, i]) @ p[n - i]) for i in range(n))
    assert float(placed[0]) == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_the_embedding_penalty_sums_each_values_projected_embedding_and_spares_pad_and_unk(model):
    """The ridge penalty, computed here value by value: |W_f e_v|^2 over every field's values v >= 2, with
    W_f the field's block of the projection. <PAD> and <UNK> get no gradient from it."""
    d = model.spec.field_dim
    w = model.project.weight.detach().numpy()
    expected = 0.0
    for i, f in enumerate(model.spec.fields):
        block = w[:, i * d : (i + 1) * d]
        for v in range(2, model.spec.vocab_sizes[i]):
            expected += float(np.sum((block @ model.embeddings[f].weight.detach().numpy()[v]) ** 2))
    assert expected > 0
    penalty = model.embedding_penalty()
    assert float(penalty.detach()) == pytest.approx(expected, rel=1e-5)
    grads = torch.autograd.grad(penalty, [model.embeddings[f].weight for f in model.spec.fields])
    for g in grads:
        assert torch.all(g[:2] == 0) and torch.any(g[2:] != 0)


def test_artifacts_saved_before_the_additive_path_load_without_it(model, vocab, tmp_path):
    from attribution.model import ModelSpec, SessionTransformer

    doc = {**model.spec.to_dict()}
    doc.pop("additive_rank")
    spec = ModelSpec.from_dict(json.loads(json.dumps(doc)))
    assert spec.additive_rank == 0
    assert spec.continuous == model.spec.continuous  # saved names are kept
    doc.pop("continuous")
    assert ModelSpec.from_dict(doc).continuous[0] == "log_seconds_from_prev"  # the feature before it was saved
    assert not hasattr(SessionTransformer(spec), "event_value")


def test_sessions_longer_than_the_model_allows_are_refused(model, vocab):
    sessions = [synthetic_sessions(1, seed=s, max_len=60) for s in range(40)]
    enc = encode_sessions(next(t for t in sessions if t.column("session_length")[0].as_py() > 40), vocab)
    long_rows = [i for i, n in enumerate(enc.lengths) if n > 40]
    assert long_rows == [0]  # a session of more than 40 events, the model's max_length
    with pytest.raises(FeatureMismatch, match="max_length"):
        _logits(model, enc, long_rows, width=41)


def test_length_buckets_cover_every_session_once_and_group_lengths():
    lengths = np.random.default_rng(0).integers(1, 100, size=1000)
    for rng in (None, np.random.default_rng(1)):
        batches = length_buckets(lengths, 32, rng)
        assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
        computed = sum(len(b) * lengths[b].max() for b in batches)
        assert lengths.sum() / computed > 0.9  # padding efficiency of the bucketing


# --------------------------------------------------------------------------------------------------
# Artifact
# --------------------------------------------------------------------------------------------------


def test_artifact_round_trip_gives_identical_logits(model, vocab, table, tmp_path):
    sha = save_artifact(str(tmp_path), weights_bytes(model), model.spec, vocab)
    assert sha == hashlib.sha256((tmp_path / "model.safetensors").read_bytes()).hexdigest()
    assert (tmp_path / "model.sha256").read_text().split()[0] == sha
    loaded = load_artifact(str(tmp_path))
    assert loaded.sha256 == sha and loaded.spec == model.spec and loaded.vocab == vocab
    assert not loaded.model.training and not any(p.requires_grad for p in loaded.model.parameters())
    enc = encode_sessions(table, vocab)
    # frozen as the loaded model is: torch may pick another kernel for weights that require grad (the
    # last digit of a logit moved), and the claim here is about the weights, bit for bit
    frozen = copy.deepcopy(model).requires_grad_(False)
    a, _ = _logits(frozen, enc, np.arange(len(enc)))
    b, _ = _logits(loaded.model, enc, np.arange(len(enc)))
    assert torch.equal(a, b)


def test_tampered_weights_are_refused(model, vocab, tmp_path):
    save_artifact(str(tmp_path), weights_bytes(model), model.spec, vocab)
    w = bytearray((tmp_path / "model.safetensors").read_bytes())
    w[-1] ^= 0x01
    (tmp_path / "model.safetensors").write_bytes(bytes(w))
    with pytest.raises(ArtifactError, match="sha256 .* does not match"):
        load_artifact(str(tmp_path))


def test_ensemble_members_round_trip_and_a_tampered_or_missing_member_is_refused(model, vocab, table, tmp_path):
    """Two members saved beside the model load back as the same networks, in order; a member whose bytes
    changed, or that is gone, stops the load: the removal CI would otherwise mix in an unknown model."""
    others = [random_model(vocab, max_length=model.spec.max_length, seed=s, std=0.2, **SMALL_MODEL) for s in (5, 6)]
    save_artifact(str(tmp_path), weights_bytes(model), model.spec, vocab, members=[weights_bytes(m) for m in others])
    loaded = load_artifact(str(tmp_path))
    assert len(loaded.ensemble) == 3 and loaded.ensemble[0] is loaded.model
    enc = encode_sessions(table, vocab)
    for original, back in zip(others, loaded.members, strict=True):
        a, _ = _logits(copy.deepcopy(original).requires_grad_(False), enc, np.arange(len(enc)))
        b, _ = _logits(back, enc, np.arange(len(enc)))
        assert torch.equal(a, b)
    member = tmp_path / "members" / "member_2.safetensors"
    w = bytearray(member.read_bytes())
    w[-1] ^= 0x01
    member.write_bytes(bytes(w))
    with pytest.raises(ArtifactError, match="member_2.safetensors: sha256"):
        load_artifact(str(tmp_path))
    member.unlink()
    with pytest.raises(ArtifactError, match="lacks ensemble member members/member_2"):
        load_artifact(str(tmp_path))


def test_a_changed_vocabulary_or_config_is_refused(model, vocab, tmp_path):
    save_artifact(str(tmp_path), weights_bytes(model), model.spec, vocab)
    doc = json.loads((tmp_path / "vocab.json").read_text())
    doc["fields"]["event_names"][2], doc["fields"]["event_names"][3] = (
        doc["fields"]["event_names"][3],
        doc["fields"]["event_names"][2],
    )
    (tmp_path / "vocab.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="vocab.json"):
        load_artifact(str(tmp_path))

    other = tmp_path / "other"
    save_artifact(str(other), weights_bytes(model), model.spec, vocab)
    cfg = json.loads((other / "model_config.json").read_text())
    cfg["model"]["d_model"] = 2 * SMALL_MODEL["d_model"]  # wider than the weights
    (other / "model_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="do not fit"):
        load_artifact(str(other))

    (other / "model_config.json").unlink()
    with pytest.raises(ArtifactError, match="incomplete"):
        load_artifact(str(other))


class _Boom:
    """Unpickling this writes a marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_loading_never_unpickles(model, vocab, tmp_path):
    """A pickle posing as the weights, even with a matching recorded sha256, is refused without running."""
    save_artifact(str(tmp_path), weights_bytes(model), model.spec, vocab)
    marker = tmp_path / "code_ran"
    payload = pickle.dumps(_Boom(str(marker)))
    (tmp_path / "model.safetensors").write_bytes(payload)
    cfg = json.loads((tmp_path / "model_config.json").read_text())
    cfg["weights_sha256"] = hashlib.sha256(payload).hexdigest()
    (tmp_path / "model_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="not a safetensors file"):
        load_artifact(str(tmp_path))
    assert not marker.exists()


def test_causal_events_see_only_earlier_events_and_the_cls_token_sees_all(table, vocab):
    """model.causal_events: every layer's attention from an event's position is 0 on the events after it
    and on the CLS token, while the CLS row reads every event; so changing the last event leaves every
    earlier event's attention rows as they were. The fused path gives the same logits as the explicit one, and padding
    still changes nothing."""
    model = random_model(vocab, max_length=64, seed=4, std=0.2, causal_events=True, **SMALL_MODEL)
    enc = encode_sessions(table, vocab)
    rows = np.arange(len(enc))
    width = int(enc.lengths.max())
    batch = enc.batch(rows, min_length=width + 2)
    tokens, cont, mask = to_tensors(batch, model.spec.fields)
    with torch.no_grad():
        x = model.represent(tokens, cont)
        logits, attention = model.forward_from_representation(x, mask, need_attention=True, all_positions=True)
        fused, _ = model.forward_from_representation(x, mask)
    torch.testing.assert_close(fused, logits, atol=1e-5, rtol=0)
    for probs in attention:
        later = torch.ones(width + 3, width + 3, dtype=torch.bool).triu(1)
        later[1:, 0] = True  # nor the CLS token, which has read the later events
        later[0] = False
        assert float(probs[:, :, later].abs().sum()) == 0.0
        long = int(np.argmax(enc.lengths))
        assert float(probs[long, :, 0, 1 : 1 + int(enc.lengths[long])].min()) > 0  # the CLS row reads them all
    # the session's last event replaced by another: no earlier event's attention row moves
    i = int(np.argmax(enc.lengths))
    n = int(enc.lengths[i])
    changed = x.clone()
    changed[i, n - 1] = x[(i + 1) % len(rows), 0]
    with torch.no_grad():
        _, again = model.forward_from_representation(changed, mask, need_attention=True, all_positions=True)
    for a, b in zip(attention, again, strict=True):
        torch.testing.assert_close(a[i, :, 1:n, :], b[i, :, 1:n, :], atol=1e-6, rtol=0)
    tight, _ = _logits(model, enc, rows)
    padded, _ = _logits(model, enc, rows, width=width + 7)
    torch.testing.assert_close(tight, padded, atol=1e-5, rtol=0)


def test_end_distance_embeds_each_events_distance_from_the_sessions_last_event(table, vocab):
    """model.end_distance 2: the embedding added at an event is that of min(events after it, 2), so a
    session's logit equals one computed by hand with those embeddings added to the events' inputs and
    the model's end embedding switched off; padding changes nothing."""
    sizes = {**SMALL_MODEL, "additive_rank": 0}  # the additive path reads x alone, not the end embedding
    model = random_model(vocab, max_length=64, seed=6, std=0.2, end_distance=2, **sizes)
    plain = copy.deepcopy(model)
    plain.spec = dataclasses.replace(model.spec, end_distance=0)
    enc = encode_sessions(table, vocab)
    rows = np.arange(len(enc))
    tokens, cont, mask = to_tensors(enc.batch(rows), model.spec.fields)
    with torch.no_grad():
        x = model.represent(tokens, cont)
        got, _ = model.forward_from_representation(x, mask)
        by_hand = x.clone()
        for s, n in enumerate(enc.lengths):
            for j in range(int(n)):
                by_hand[s, j] += model.end_embedding.weight[min(int(n) - 1 - j, 2)]
        expected, _ = plain.forward_from_representation(by_hand, mask)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    padded, _ = _logits(model, enc, rows, width=int(enc.lengths.max()) + 5)
    torch.testing.assert_close(got, padded, atol=1e-5, rtol=0)
    # the empty session (every event removed) has no distance to embed: the CLS token alone, as without it
    from attribution.removal import empty_logit

    both = copy.deepcopy(model)
    both.spec = dataclasses.replace(model.spec, causal_events=True)
    assert empty_logit(both, "cpu") == pytest.approx(empty_logit(plain, "cpu"), abs=1e-6)


def test_the_context_path_adds_each_events_weight_in_its_context_and_removal_moves_it(table, vocab):
    """model.context: with the CLS head and the additive path silenced, the logit is the context path
    alone, computed here event by event from the session's event types. Event i of type t adds W[t, u]
    for every type u whose first event comes before i with no t between them (i is the first t after
    the first u: the pair "u before t" counts once per session), W[t, repeat] (1 - exp(-3 n)) for n
    earlier t's, W[t, first] if it is the first event and W[t, last] if it is the last. Padding changes
    nothing, a session with an event removed (compacted, as removal does) has the context that removal
    leaves, and the input representation carries the event type's one-hot after its d_model values."""
    sizes = {**SMALL_MODEL, "additive_rank": 0}
    model = random_model(vocab, max_length=64, seed=8, std=0.3, context=True, **sizes)
    with torch.no_grad():
        model.head[-1].weight.zero_()
        model.head[-1].bias.zero_()
    names = vocab.tokens["event_names"]
    w = model.context_matrix.detach().numpy()  # random_model drew it from N(0, 0.3)
    assert w.shape == (len(names) + 2, len(names) + 5)

    def terms(types: list[str]) -> list[float]:
        out = []
        for i, t in enumerate(types):
            row = w[names.index(t) + 2]
            earlier_t = [j for j in range(i) if types[j] == t]
            term = 0.0
            for u in set(types[:i]):
                first_u = types.index(u)
                if not earlier_t or earlier_t[-1] < first_u:
                    term += row[names.index(u) + 2]
            term += row[-3] * (1 - math.exp(-3 * len(earlier_t)))
            term += (row[-2] if i == 0 else 0.0) + (row[-1] if i == len(types) - 1 else 0.0)
            out.append(float(term))
        return out

    enc = encode_sessions(table, vocab)
    rows = np.arange(len(enc))
    tokens, cont, mask = to_tensors(enc.batch(rows), model.spec.fields)
    with torch.no_grad():
        x = model.represent(tokens, cont)
        got, _ = model.forward_from_representation(x, mask)
    assert x.shape[-1] == model.spec.d_model + len(names) + 2
    sessions = table.column("event_names").to_pylist()
    expected = [sum(terms(types)) for types in sessions]
    assert any(len(set(types)) < len(types) for types in sessions)  # repeats are in the data
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)
    padded, _ = _logits(model, enc, rows, width=int(enc.lengths.max()) + 5)
    torch.testing.assert_close(got, padded, atol=1e-5, rtol=0)
    from attribution.removal import masked_logits

    s = next(i for i, types in enumerate(sessions) if len(types) >= 3 and types[0] not in types[1:])
    n = len(sessions[s])
    keep = np.zeros((1, x.shape[1]), dtype=bool)
    keep[0, 1:n] = True
    removed = masked_logits(model, x, np.array([s]), keep, max_positions=64, keep_positions=False)
    assert removed[0] == pytest.approx(sum(terms(sessions[s][1:])), abs=1e-5)
    # the other events lose the pairs the first event made: their terms are not the same as before
    assert np.abs(np.array(terms(sessions[s][1:])) - np.array(terms(sessions[s])[1:])).max() > 1e-3
    # the empty session (every event removed) has no context: the CLS token alone, as without the path
    from attribution.removal import empty_logit

    plain = copy.deepcopy(model)
    plain.spec = dataclasses.replace(model.spec, context=False)
    assert empty_logit(model, "cpu") == pytest.approx(empty_logit(plain, "cpu"), abs=1e-6)


def test_artifacts_saved_before_the_context_path_load_without_it(model):
    from attribution.model import ModelSpec, SessionTransformer

    doc = {**model.spec.to_dict()}
    doc.pop("context")
    spec = ModelSpec.from_dict(doc)
    assert not spec.context and spec.input_width == spec.d_model
    assert not hasattr(SessionTransformer(spec), "context_matrix")


def test_the_context_ridge_is_the_sum_of_the_matrixs_squared_weights(table, vocab):
    """train.context_ridge's penalty: sum W^2 (gradient 2 W), apart from the values' ridge, and 0
    without the path."""
    sizes = {**SMALL_MODEL, "additive_rank": 0}
    model = random_model(vocab, max_length=64, seed=9, std=0.3, context=True, **sizes)
    plain = copy.deepcopy(model)
    plain.spec = dataclasses.replace(model.spec, context=False)
    w = model.context_matrix
    penalty = model.context_penalty()
    assert float(penalty) == pytest.approx(float((w.detach() ** 2).sum()), rel=1e-5) and float(penalty) > 0
    (grad,) = torch.autograd.grad(penalty, [w])
    torch.testing.assert_close(grad, 2 * w.detach())
    assert float(plain.context_penalty()) == 0.0
    assert float(model.embedding_penalty()) == pytest.approx(float(plain.embedding_penalty()), rel=1e-6)
