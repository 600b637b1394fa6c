"""The kernels the attribution methods are made of: plain torch on one padded batch, no Spark.

:class:`Batch` is the forward every method shares (the events' representation, the logits, and on demand
the input gradient and the attention); :func:`rollout` and :func:`integrated_gradients` are the helpers
two methods call. They sit below the method registry (:mod:`attribution.methods`), which declares each
method over them, and :mod:`attribution.attribute` runs the registered methods over many sessions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from attribution.model import SessionTransformer

if TYPE_CHECKING:
    from attribution.methods import Method


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
