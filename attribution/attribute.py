"""Attribution math: plain torch on batches of sessions, no Spark.

Every method runs with the model in eval mode and its parameters frozen, so dropout is off and no weight
gradient is computed: the same session always gets the same scores, whatever batch it is in. The methods
themselves are declared in :mod:`attribution.methods`; this module runs the forward they share
(:class:`Batch`) and the helpers they call:

- ``grad_x_input``: sessions in a batch don't interact, so one forward and one backward of
  ``logits.sum()`` give every session's exact gradient.
- ``attention_rollout`` (:func:`rollout`): carried as the CLS row from the last layer down.
- ``integrated_gradients`` (:func:`integrated_gradients`): Gauss-Legendre nodes as Captum's default;
  ``completeness_gap`` = sum of contributions - (f(x) - f(x')).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch

from attribution import methods as registry
from attribution.features import EncodedSessions, length_buckets
from attribution.methods import Method, normalize
from attribution.model import SessionTransformer, to_tensors

# every method registered when this module is imported (attribution.methods.names() for the current set)
METHODS = registry.names()
__all__ = ["METHODS", "AttributionOptions", "Batch", "attribute_batch", "attribute_sessions", "normalize"]


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
    # method names (looked up in attribution.methods) or Method objects
    methods: tuple[str | Method, ...] = ("grad_x_input",)
    attention_layer: int = -1
    ig_steps: int = 32
    ig_baseline: str = "pad"  # "pad": the PAD representation; "zero": the zero vector


@dataclass
class Batch:
    """One padded batch after the forward every method shares: what a method's ``compute`` reads.

    ``x`` is the events' representation (B, L, D), ``logits`` the model's (B,) from that forward. The
    gradient of ``logits.sum()`` with respect to ``x`` and the attention probabilities are there only when
    a method of the batch declares it needs them; the gradient is computed once, on first use."""

    model: SessionTransformer
    x: torch.Tensor
    x_in: torch.Tensor
    mask: torch.Tensor
    logits: torch.Tensor
    options: AttributionOptions
    attention: list[torch.Tensor] | None = None
    logits_graph: torch.Tensor | None = field(default=None, repr=False)  # ``logits`` before detach
    _gradient: torch.Tensor | None = field(default=None, repr=False)

    @property
    def maskf(self) -> torch.Tensor:
        return self.mask.to(self.x.dtype)

    def input_gradient(self) -> torch.Tensor:
        if self._gradient is None:
            if not self.x_in.requires_grad or self.logits_graph is None:
                raise ValueError("a method reads the input gradient but does not declare needs_gradient")
            with torch.enable_grad():
                (self._gradient,) = torch.autograd.grad(self.logits_graph.sum(), self.x_in)
        return self._gradient

    def attention_probabilities(self) -> list[torch.Tensor]:
        if self.attention is None:
            raise ValueError("a method reads the attention but does not declare needs_attention")
        return self.attention


def attribute_batch(
    model: SessionTransformer,
    tokens: dict[str, torch.Tensor],
    continuous: torch.Tensor,
    mask: torch.Tensor,
    options: AttributionOptions = AttributionOptions(),
) -> dict[str, torch.Tensor]:
    """Scores for one padded batch, keyed by the event table's column names. Returns tensors on the batch's
    device: ``logit``/``prediction`` (B,); per method its columns (B, L) with zeros on padding (see
    :attr:`Method.event_columns`) and its per-session columns (B,)."""
    chosen = registry.resolve(options.methods)
    if model.training:
        raise ValueError("attribution needs the model in eval mode (dropout off); call model.eval()")
    with torch.no_grad():
        x = model.represent(tokens, continuous)
    want_attention = any(m.needs_attention for m in chosen)
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(any(m.needs_gradient for m in chosen))
        logits, attention = model.forward_from_representation(x_in, mask, need_attention=want_attention)
    batch = Batch(
        model=model,
        x=x,
        x_in=x_in,
        mask=mask,
        logits=logits.detach(),
        logits_graph=logits,
        options=options,
        attention=[a.detach() for a in attention] if want_attention and attention is not None else None,
    )
    out: dict[str, torch.Tensor] = {"logit": batch.logits, "prediction": torch.sigmoid(batch.logits)}
    for m in chosen:
        scores = m.compute(batch)
        out[m.attribution] = scores.attribution.detach()
        if m.contribution is not None:
            out[m.contribution] = scores.contribution.detach()
        missing = {c for c, _ in m.session_columns} - set(scores.per_session)
        if missing:
            raise ValueError(f"method {m.name} did not compute its per-session column(s) {sorted(missing)}")
        out.update({c: scores.per_session[c].detach() for c, _ in m.session_columns})
    return out


def integrated_gradients(
    model: SessionTransformer,
    x: torch.Tensor,
    mask: torch.Tensor,
    logits: torch.Tensor,
    options: AttributionOptions,
) -> tuple[torch.Tensor, torch.Tensor]:
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
