"""Attribution math against plain per-session references and Captum, plus its invariances."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attribution.attribute import (
    METHODS,
    AttributionOptions,
    attribute_batch,
    attribute_sessions,
)
from attribution.features import Vocabularies, encode_sessions
from attribution.kernels import pad_representation
from attribution.model import to_tensors
from tests.helpers import SMALL_MODEL, random_model, synthetic_sessions, vocab_of

ALL = AttributionOptions(methods=METHODS, ig_steps=16)


@pytest.fixture(scope="module", params=[False, True], ids=["model", "with-context-path"])
def setup(request):
    """The model, and the model with the context path, whose input representation also carries each
    event's type (attribution/model.py): every method must hold for both."""
    table = synthetic_sessions(30, seed=8, max_len=25)
    vocab = vocab_of(table)
    model = random_model(vocab, max_length=30, seed=1, std=0.2, context=request.param, **SMALL_MODEL)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, encode_sessions(table, vocab), vocab


def _batch(model, enc, rows, width=1):
    b = enc.batch(rows, min_length=width)
    return (*to_tensors(b, model.spec.fields), b["mask"])


def test_normalized_scores_sum_to_one_and_padding_gets_nothing(setup):
    model, enc, _ = setup
    tokens, cont, mask, m = _batch(model, enc, np.arange(len(enc)), width=30)
    out = attribute_batch(model, tokens, cont, mask, ALL)
    for key in ("gradient_attribution", "attention_attribution", "rollout_attribution", "ig_attribution"):
        torch.testing.assert_close(
            out[key].sum(1).double(), torch.ones(len(enc), dtype=torch.float64), atol=1e-6, rtol=0
        )
        assert float(out[key][~mask].abs().sum()) == 0.0
        assert float(out[key].min()) >= 0.0


def test_grad_x_input_equals_a_per_session_loop_and_captum(setup):
    from captum.attr import InputXGradient

    model, enc, _ = setup
    rows = np.arange(len(enc))
    tokens, cont, mask, m = _batch(model, enc, rows)
    out = attribute_batch(model, tokens, cont, mask, AttributionOptions(methods=("grad_x_input",)))
    # reference: the original analysis's loop, one session and one backward at a time, unpadded
    for i in rows:
        t1, c1, k1, _ = _batch(model, enc, [i])
        x = model.represent(t1, c1).detach().requires_grad_(True)
        logit, _ = model.forward_from_representation(x, k1)
        logit.sum().backward()
        ref = (x.grad * x).sum(-1)[0]
        n = int(enc.lengths[i])
        torch.testing.assert_close(out["contribution"][i, :n], ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(
            out["gradient_attribution"][i, :n], ref.abs() / (ref.abs().sum() + 1e-12), atol=1e-5, rtol=0
        )
    # Captum on the same input representation
    x = model.represent(tokens, cont).detach()
    captum = InputXGradient(lambda z: model.forward_from_representation(z, mask)[0]).attribute(x).sum(-1)
    torch.testing.assert_close(out["contribution"], captum * mask, atol=1e-5, rtol=0)


def test_integrated_gradients_equals_captum_and_is_complete(setup):
    from captum.attr import IntegratedGradients

    model, enc, _ = setup
    tokens, cont, mask, _ = _batch(model, enc, np.arange(len(enc)))
    opts = AttributionOptions(methods=("integrated_gradients",), ig_steps=32)
    out = attribute_batch(model, tokens, cont, mask, opts)
    x = model.represent(tokens, cont).detach()
    baseline = pad_representation(model, x)
    ig = IntegratedGradients(lambda z, m: model.forward_from_representation(z, m)[0])
    ref, delta = ig.attribute(
        x,
        baselines=baseline,
        additional_forward_args=(mask,),
        n_steps=32,
        method="gausslegendre",
        return_convergence_delta=True,
    )
    torch.testing.assert_close(out["ig_contribution"], ref.sum(-1) * mask, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        out["ig_completeness_gap"], delta.to(out["ig_completeness_gap"].dtype), atol=1e-5, rtol=0
    )
    # completeness: with 32 steps the contributions add up to f(x) - f(baseline) closely
    assert float(out["ig_completeness_gap"].abs().max()) < 0.05


def _rollout_reference(attention, i, n):
    """Abnar & Zuidema for one session, on its own (n+1) x (n+1) block, in numpy."""
    r = np.eye(n + 1)
    for probs in attention:
        a = probs[i, :, : n + 1, : n + 1].mean(0).double().numpy()
        a = 0.5 * a + 0.5 * np.eye(n + 1)
        a = a / a.sum(-1, keepdims=True)
        r = a @ r
    cls = r[0, 1:]
    return cls / cls.sum()


def test_attention_and_rollout_match_a_plain_reference(setup):
    model, enc, _ = setup
    tokens, cont, mask, _ = _batch(model, enc, np.arange(len(enc)))
    out = attribute_batch(model, tokens, cont, mask, AttributionOptions(methods=("attention", "attention_rollout")))
    with torch.no_grad():
        _, attention = model.forward_from_representation(
            model.represent(tokens, cont), mask, need_attention=True, all_positions=True
        )  # every layer's full matrix, for the plain reference
    for i, n in enumerate(enc.lengths):
        n = int(n)
        last = attention[-1][i, :, 0, 1 : n + 1].mean(0)
        torch.testing.assert_close(out["attention_attribution"][i, :n], last / last.sum(), atol=1e-6, rtol=0)
        np.testing.assert_allclose(
            out["rollout_attribution"][i, :n].double().numpy(), _rollout_reference(attention, i, n), atol=1e-6
        )
    first = attribute_batch(model, tokens, cont, mask, AttributionOptions(methods=("attention",), attention_layer=0))
    assert not torch.allclose(
        first["attention_attribution"], out["attention_attribution"]
    )  # the layer choice is honoured


def test_batch_composition_and_padding_change_nothing(setup):
    model, enc, _ = setup
    big = attribute_sessions(model, enc, ALL, batch_size=64)
    one = attribute_sessions(model, enc, ALL, batch_size=1)
    assert set(big) == set(one)
    for key in big:
        np.testing.assert_allclose(big[key], one[key], atol=2e-5, rtol=0, err_msg=key)
    assert big["gradient_attribution"].shape == (int(enc.offsets[-1]),)
    assert big["prediction"].shape == (len(enc),)


def test_single_event_sessions_and_unknown_tokens(setup):
    model, _, vocab = setup
    table = synthetic_sessions(6, seed=21, max_len=2)
    # the vocabulary lacks store s0, so its events are <UNK>
    smaller = Vocabularies({**vocab.tokens, "store_ids": [s for s in vocab.tokens["store_ids"] if s != "s0"]}, 1)
    enc = encode_sessions(table, smaller)
    enc1 = encode_sessions(table.slice(0, 1), smaller)
    enc1.offsets = np.array([0, 1])  # the first event alone: a session of length 1
    out = attribute_sessions(model, enc1, ALL)
    for key in ("gradient_attribution", "attention_attribution", "rollout_attribution", "ig_attribution"):
        assert out[key].tolist() == pytest.approx([1.0], abs=1e-6)
    full = attribute_sessions(model, enc, ALL)
    assert np.isfinite(full["gradient_attribution"]).all() and np.isfinite(full["prediction"]).all()


def test_training_mode_and_unknown_methods_are_refused(setup):
    model, enc, _ = setup
    tokens, cont, mask, _ = _batch(model, enc, [0, 1])
    with pytest.raises(ValueError, match="unknown attribution method"):
        attribute_batch(model, tokens, cont, mask, AttributionOptions(methods=("shap",)))
    model.train()
    try:
        with pytest.raises(ValueError, match="eval mode"):
            attribute_batch(model, tokens, cont, mask)
    finally:
        model.eval()
