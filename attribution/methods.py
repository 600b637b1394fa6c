"""The attribution methods, each declared once.

A :class:`Method` names its output columns and says how it scores one padded batch. Everything else is
derived from :data:`REGISTRY`: the configuration's validation (``attribution.methods``,
``report.default_method``), the attribution UDF's output schema, the event-level table's columns, the
long format the report aggregates, the faithfulness sample, and ``jobs/explain.py``.

Every method gives each event a **normalized attribution** (|score| over the session's events, summing
to 1: the original analysis's normalization); a **signed** method also gives its raw **contribution** in
log-odds (how far the event moves the model's logit towards conversion), and only signed methods have an
effect in the report's tables.

Adding a method: write its ``compute`` (a function of :class:`attribution.kernels.Batch`, returning
:class:`Scores`) and :func:`register` a :class:`Method` naming its columns. The UDF carries the resolved
``Method`` objects in its closure, so a method registered at run time (a notebook, a test) reaches the
executors too.

It sits above its kernels (:mod:`attribution.kernels`: the shared forward, rollout, integrated gradients)
and below :mod:`attribution.attribute`, which runs the registered methods over batches of sessions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from attribution.kernels import Batch, integrated_gradients, rollout

EPS = 1e-12


@dataclass(frozen=True)
class Scores:
    """What a method computes for one batch: (B, L) tensors with zeros on padding, and per-session (B,)
    values named by :attr:`Method.session_columns`."""

    attribution: Any
    contribution: Any = None
    per_session: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    name: str  # the name in attribution.methods and report.default_method
    attribution: str  # the event table's column of the normalized attribution
    compute: Callable[[Batch], Scores]
    contribution: str | None = None  # the event table's column of the signed contribution (log-odds), if any
    # per-session values (column, what it is), e.g. a completeness gap; the attribute stage reports their
    # mean and largest absolute value
    session_columns: tuple[tuple[str, str], ...] = ()
    needs_gradient: bool = False  # reads the gradient of the logit with respect to the events' representation
    needs_attention: bool = False  # reads the model's attention probabilities
    cost: str = ""  # model passes per batch, beyond the forward every method shares
    description: str = ""

    @property
    def signed(self) -> bool:
        return self.contribution is not None

    @property
    def event_columns(self) -> tuple[str, ...]:
        """Its per-event columns, in the event table's order."""
        return (self.attribution,) if self.contribution is None else (self.attribution, self.contribution)


def normalize(scores: Any, mask: Any) -> Any:
    """|scores| over each session's real events, scaled to sum to 1 (the original analysis's normalization)."""
    a = scores.abs() * mask
    return a / (a.sum(dim=1, keepdim=True) + EPS)


def _grad_x_input(b: Batch) -> Scores:
    contribution = (b.input_gradient() * b.x).sum(-1) * b.maskf
    return Scores(attribution=normalize(contribution, b.maskf), contribution=contribution)


def _attention(b: Batch) -> Scores:
    attention = b.attention_probabilities()
    cls = attention[b.options.attention_layer][:, :, 0, 1:].mean(dim=1) * b.maskf
    return Scores(attribution=cls / (cls.sum(dim=1, keepdim=True) + EPS))


def _attention_rollout(b: Batch) -> Scores:
    r = rollout(b.attention_probabilities(), b.maskf)
    return Scores(attribution=r / (r.sum(dim=1, keepdim=True) + EPS))


def _integrated_gradients(b: Batch) -> Scores:
    ig, gap = integrated_gradients(b.model, b.x, b.mask, b.logits, b.options)
    return Scores(attribution=normalize(ig, b.maskf), contribution=ig, per_session={"ig_completeness_gap": gap})


REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to the registry (replacing one of the same name) and return it."""
    if method.contribution == method.attribution or not method.attribution:
        raise ValueError(f"method {method.name}: needs an attribution column distinct from its contribution")
    REGISTRY[method.name] = method
    return method


register(
    Method(
        name="grad_x_input",
        attribution="gradient_attribution",
        contribution="contribution",
        compute=_grad_x_input,
        needs_gradient=True,
        cost="1 backward",
        description="the gradient of the logit with respect to each event's representation, times the "
        "representation, summed over the embedding (the original analysis's method)",
    )
)
register(
    Method(
        name="attention",
        attribution="attention_attribution",
        compute=_attention,
        needs_attention=True,
        cost="none (the forward's attention)",
        description="the CLS token's attention to each event, averaged over the heads, in one layer "
        "(attribution.attention_layer)",
    )
)
register(
    Method(
        name="attention_rollout",
        attribution="rollout_attribution",
        compute=_attention_rollout,
        needs_attention=True,
        cost="none (the forward's attention)",
        description="attention rollout (Abnar & Zuidema 2020): per layer 0.5 x head-averaged attention + "
        "0.5 x identity (the residual), multiplied through the layers; the CLS row",
    )
)
register(
    Method(
        name="integrated_gradients",
        attribution="ig_attribution",
        contribution="ig_contribution",
        compute=_integrated_gradients,
        session_columns=(("ig_completeness_gap", "integrated gradients completeness gap"),),
        cost="attribution.ig_steps forwards and backwards",
        description="integrated gradients (Sundararajan et al. 2017): (x - baseline) x the average gradient "
        "along the straight path from the baseline (attribution.ig_baseline) to x, Gauss-Legendre nodes",
    )
)


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get(name: str) -> Method:
    """The registered method called ``name``; a ValueError naming the known ones otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"unknown attribution method {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def resolve(items: Iterable[str | Method]) -> tuple[Method, ...]:
    """Methods from names (looked up in the registry) or ``Method`` objects (kept as they are)."""
    return tuple(m if isinstance(m, Method) else get(m) for m in items)


def present(columns: Iterable[str]) -> tuple[Method, ...]:
    """The registered methods whose attribution column is among ``columns``, in registry order."""
    have = set(columns)
    return tuple(m for m in REGISTRY.values() if m.attribution in have)


def event_columns() -> tuple[str, ...]:
    """Every registered method's per-event and per-session columns, in the event table's order."""
    return tuple(c for m in REGISTRY.values() for c in (*m.event_columns, *(s for s, _ in m.session_columns)))
