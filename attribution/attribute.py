"""Attribution math: plain torch on batches of sessions, no Spark.

Every method runs with the model in eval mode and its parameters frozen, so dropout is off and no weight
gradient is computed: the same session always gets the same scores, whatever batch it is in.

- ``grad_x_input`` (default, the seed's method): d logit / d x_i, times x_i, summed over the embedding,
  where x_i is event i's input representation. Sessions in a batch don't interact, so one forward and one
  backward of ``logits.sum()`` give every session's exact gradient. The signed value is the event's
  ``contribution``; ``|contribution| / (sum over the session + 1e-12)`` is ``gradient_attribution``.
- ``attention``: CLS -> event attention, head-averaged, one layer (the last by default), renormalized
  over the session's events.
- ``attention_rollout`` (Abnar & Zuidema 2020): per layer 0.5 * head-averaged attention + 0.5 * I (the
  residual), rows normalized, multiplied through the layers; the CLS row, renormalized over events.
- ``integrated_gradients`` (Sundararajan et al. 2017): (x - x') * the average gradient along the straight
  path from the baseline x' (the PAD representation by default) to x, with Gauss-Legendre nodes as
  Captum's default; ``completeness_gap`` = sum of contributions - (f(x) - f(x')).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from attribution.features import EncodedSessions, length_buckets
from attribution.model import SessionTransformer, to_tensors

METHODS = ("grad_x_input", "attention", "attention_rollout", "integrated_gradients")
EPS = 1e-12


def normalize(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """|scores| over each session's real events, scaled to sum to 1 (the seed's normalization)."""
    a = scores.abs() * mask
    return a / (a.sum(dim=1, keepdim=True) + EPS)


def pad_representation(model: SessionTransformer, like: torch.Tensor) -> torch.Tensor:
    """The representation of an event whose fields are all <PAD> and continuous features 0."""
    spec = model.spec
    b, n = like.shape[:2]
    tokens = {f: torch.zeros(b, n, dtype=torch.long, device=like.device) for f in spec.fields}
    cont = torch.zeros(b, n, len(spec.continuous), device=like.device)
    return model.represent(tokens, cont).detach()


def gauss_legendre(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes in [0, 1] and their weights (sum 1), as Captum's default 'gausslegendre' method."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return 0.5 * (nodes + 1.0), 0.5 * weights


def rollout(attention: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Attention rollout from per-layer (B, H, N, N) probabilities; returns CLS -> event scores (B, L).

    Only the CLS row of A_last ... A_first is needed, so it is carried as a row vector from the last
    layer down (O(N^2) per layer, not O(N^3)); the last layer may hold its CLS row alone, (B, H, 1, N),
    as the model computes it by default."""
    n = attention[0].shape[-1]
    eye = torch.eye(n, device=mask.device)
    row = None
    for probs in reversed(attention):
        a = 0.5 * probs.mean(dim=1) + 0.5 * eye[: probs.shape[2]]
        a = a / a.sum(dim=-1, keepdim=True)
        row = a[:, :1] if row is None else row @ a
    assert row is not None, "rollout needs at least one layer's attention"
    return row[:, 0, 1:] * mask


@dataclass(frozen=True)
class AttributionOptions:
    methods: tuple[str, ...] = ("grad_x_input",)
    attention_layer: int = -1
    ig_steps: int = 32
    ig_baseline: str = "pad"  # "pad": the PAD representation; "zero": the zero vector


def attribute_batch(
    model: SessionTransformer,
    tokens: dict[str, torch.Tensor],
    continuous: torch.Tensor,
    mask: torch.Tensor,
    options: AttributionOptions = AttributionOptions(),
) -> dict[str, torch.Tensor]:
    """Scores for one padded batch. Returns tensors on the batch's device:

    ``logit``/``prediction`` (B,); per method (B, L) with zeros on padding: ``contribution`` and
    ``grad_x_input`` (normalized); ``attention``; ``attention_rollout``; ``ig_contribution``,
    ``integrated_gradients`` (normalized) and ``ig_completeness_gap`` (B,).
    """
    unknown = set(options.methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown attribution method(s) {sorted(unknown)}; known: {', '.join(METHODS)}")
    if model.training:
        raise ValueError("attribution needs the model in eval mode (dropout off); call model.eval()")
    maskf = mask.to(continuous.dtype)
    out: dict[str, torch.Tensor] = {}
    want_attention = bool({"attention", "attention_rollout"} & set(options.methods))
    with torch.no_grad():
        x = model.represent(tokens, continuous)
    with torch.enable_grad():
        x_in = x.detach().requires_grad_("grad_x_input" in options.methods)
        logits, attention = model.forward_from_representation(x_in, mask, need_attention=want_attention)
        if "grad_x_input" in options.methods:
            (grad,) = torch.autograd.grad(logits.sum(), x_in)
            contribution = (grad * x).sum(-1) * maskf
            out["contribution"] = contribution.detach()
            out["grad_x_input"] = normalize(contribution, maskf).detach()
    out["logit"] = logits.detach()
    out["prediction"] = torch.sigmoid(out["logit"])
    if want_attention:
        assert attention is not None  # asked for with need_attention
        attention = [a.detach() for a in attention]
        if "attention" in options.methods:
            cls = attention[options.attention_layer][:, :, 0, 1:].mean(dim=1) * maskf
            out["attention"] = cls / (cls.sum(dim=1, keepdim=True) + EPS)
        if "attention_rollout" in options.methods:
            r = rollout(attention, maskf)
            out["attention_rollout"] = r / (r.sum(dim=1, keepdim=True) + EPS)
    if "integrated_gradients" in options.methods:
        ig, gap = integrated_gradients(model, x, mask, out["logit"], options)
        out["ig_contribution"] = ig
        out["integrated_gradients"] = normalize(ig, maskf)
        out["ig_completeness_gap"] = gap
    return out


def integrated_gradients(model, x, mask, logits, options: AttributionOptions):
    """IG contributions (B, L) and the completeness gap (B,), one forward/backward per step."""
    baseline = pad_representation(model, x) if options.ig_baseline == "pad" else torch.zeros_like(x)
    alphas, weights = gauss_legendre(options.ig_steps)
    total = torch.zeros_like(x)
    delta = x - baseline
    with torch.enable_grad():
        for a, w in zip(alphas, weights, strict=True):
            point = (baseline + float(a) * delta).requires_grad_(True)
            lg, _ = model.forward_from_representation(point, mask)
            (g,) = torch.autograd.grad(lg.sum(), point)
            total += float(w) * g
    with torch.no_grad():
        base_logit, _ = model.forward_from_representation(baseline, mask)
    contrib = (total * delta).sum(-1) * mask.to(x.dtype)
    gap = contrib.sum(1) - (logits - base_logit)
    return contrib.detach(), gap.detach()


# --------------------------------------------------------------------------------------------------
# Over many sessions: length-bucketed batches, results back in input order, ragged.
# --------------------------------------------------------------------------------------------------


def attribute_sessions(
    model: SessionTransformer,
    encoded: EncodedSessions,
    options: AttributionOptions,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    stats_out: dict | None = None,
    max_positions: int | None = None,
) -> dict[str, np.ndarray]:
    """Attribute every session of ``encoded``. Per-event outputs come back flat, aligned with
    ``encoded.offsets`` (float64), per-session outputs as (n,) arrays, both in input order.

    Sessions are grouped by length before padding. A CUDA out-of-memory error splits the batch in
    two and retries each half. ``stats_out`` receives batches, OOM splits and computed positions
    (padding efficiency = real events / computed positions). ``max_positions`` caps a batch's padded
    positions (sessions x longest), so memory is bounded by it whatever the session lengths."""
    n, total = len(encoded), int(encoded.offsets[-1])
    per_event: dict[str, np.ndarray] = {}
    per_session: dict[str, np.ndarray] = {}
    lengths = encoded.lengths
    stats = {"batches": 0, "oom_splits": 0, "computed_positions": 0}

    # Results are copied back one batch late: the next batch's kernels are queued before waiting for
    # this one's, so on a GPU the host's padding and scattering overlap the device's compute.
    pending: list[tuple[np.ndarray, np.ndarray, dict[str, torch.Tensor]]] = []

    def collect(rows: np.ndarray, m: np.ndarray, result: dict[str, torch.Tensor]) -> None:
        dst = (encoded.offsets[rows][:, None] + np.arange(m.shape[1])[None, :])[m]
        for key, value in result.items():
            v = value.cpu().numpy().astype(np.float64)
            if v.ndim == 1:
                per_session.setdefault(key, np.zeros(n))[rows] = v
            else:
                per_event.setdefault(key, np.zeros(total))[dst] = v[m]

    def attempt(batch: dict) -> dict[str, torch.Tensor]:
        # Its own frame, so a failed attempt's tensors are released with it.
        tokens, cont, mask = to_tensors(batch, model.spec.fields, device)
        return attribute_batch(model, tokens, cont, mask, options)

    # A work queue, not a recursive closure: a function that calls itself through its closure is a
    # reference cycle, and every array of this call would then wait for the cyclic garbage collector,
    # so a worker's memory would grow with the number of Arrow batches it has seen.
    queue = deque(rows for rows in length_buckets(lengths, batch_size, max_positions=max_positions) if len(rows))
    while queue:
        rows = queue.popleft()
        batch = encoded.batch(rows)
        result = None
        try:
            result = attempt(batch)
        except torch.cuda.OutOfMemoryError:
            if len(rows) == 1:
                raise
        if result is None:
            # A GPU out of memory. Split outside the except block: while it runs, the exception's
            # traceback keeps the failed batch's tensors alive (seen on an H200). Free them, halve the
            # batch and go on with both halves first.
            stats["oom_splits"] += 1
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = len(rows) // 2
            queue.appendleft(rows[half:])
            queue.appendleft(rows[:half])
            continue
        stats["batches"] += 1
        stats["computed_positions"] += batch["mask"].size
        pending.append((rows, batch["mask"], result))
        if len(pending) > 1:
            collect(*pending.pop(0))
    while pending:
        collect(*pending.pop(0))
    if stats_out is not None:
        stats_out.update(stats)
    return {**per_event, **per_session}
