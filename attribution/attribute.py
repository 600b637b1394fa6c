"""Attribution math: plain torch on batches of sessions, no Spark.

Every method runs with the model in eval mode and its parameters frozen, so dropout is off and no weight
gradient is computed: the same session always gets the same scores, whatever batch it is in. The methods
themselves are declared in :mod:`attribution.methods`, over the kernels of :mod:`attribution.kernels`
(:class:`Batch`, the forward they share, and the helpers they call); this module runs them over batches
of sessions:

- ``grad_x_input``: sessions in a batch don't interact, so one forward and one backward of
  ``logits.sum()`` give every session's exact gradient.
- ``attention_rollout`` (:func:`rollout`): carried as the CLS row from the last layer down.
- ``integrated_gradients`` (:func:`integrated_gradients`): Gauss-Legendre nodes as Captum's default;
  ``completeness_gap`` = sum of contributions - (f(x) - f(x')).
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

from attribution import methods as registry
from attribution.features import EncodedSessions, length_buckets
from attribution.kernels import AttributionOptions, Batch, integrated_gradients, rollout
from attribution.methods import normalize
from attribution.model import SessionTransformer, to_tensors

# every method registered when this module is imported (attribution.methods.names() for the current set)
METHODS = registry.names()
DEFAULT_OPTIONS = AttributionOptions()  # frozen: one instance serves every call
__all__ = [
    "METHODS",
    "AttributionOptions",
    "Batch",
    "attribute_batch",
    "attribute_sessions",
    "integrated_gradients",
    "normalize",
    "rollout",
]


def attribute_batch(
    model: SessionTransformer,
    tokens: dict[str, torch.Tensor],
    continuous: torch.Tensor,
    mask: torch.Tensor,
    options: AttributionOptions = DEFAULT_OPTIONS,
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
