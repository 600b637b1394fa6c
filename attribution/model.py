"""The session transformer and its artifact (safetensors weights + JSON config and vocabularies).

Per event, the categorical fields' embeddings and a projection of the continuous features are
concatenated and projected to ``d_model``: that vector is the event's **input representation**, the
"input embedding" gradient x input differentiates against. A learned CLS token and learned positions
are added after it, so attribution lands on the events, not on positions.

The representation is linear with no constant offset: an event whose fields are all <PAD> and whose
continuous features are 0 is exactly the zero vector. So gradient x input, whose implicit reference is
the zero vector, measures each event against that empty event, the same reference integrated gradients
uses by default. (With an offset, as in artifacts saved before ``ModelSpec.input_bias`` existed, the
reference would be an arbitrary vector and the signed contributions of event types could even flip.)

The encoder is written out (pre-norm, GELU) instead of using ``nn.TransformerEncoder``, whose fused path
cannot return attention weights. ``need_attention=True`` computes the same softmax explicitly and returns
per-layer, per-head probabilities; without it the layer calls ``scaled_dot_product_attention``. Both give
the same logits (tested).

The head reads the CLS position alone, so outside training the last layer is computed for that one
query: every event still gives its key and value, but the queries, attention output, feed-forward and
residual of the other positions, which nothing reads, are skipped. The logits and their gradients are
the full computation's (tested). What that saves is measured in ``bench/bench_attribute.py`` (figures in
docs/benchmarks.md).

The additive path (``ModelSpec.additive_rank`` > 0): beside the CLS head, each event adds
``sum_k (A x_i)_k * P[position_i]_k`` to the logit, ``x_i`` its input representation. The head reads an
attention-weighted average, which can't count; the path carries each event's main effect as a term of a
sum, and the encoder what the events do together. The term is linear in ``x_i`` with no offset, so the
empty event adds 0 and gradient x input adds up to the path's share of the logit exactly.

The context path (``ModelSpec.context``): each event also adds ``onehot(type_i)^T W c_i`` to the logit, its
context ``c_i`` being, per event type t, whether a step of type t came before it in the session (1 -
exp(-3 n) for n such steps: 0.95 for one, nearly 1 for more), and whether it is the session's first and its last event. So W holds, for each
event type, how its effect changes after each other type (a pair: "b helps after an a"), after itself
(a repeat: "the first c counts more than its repeats") and as the first or last step ("d hurts as the
last step"), as a logistic regression would be given those terms. The encoder could learn them through
attention, but on the order-dependent scenarios it does not (docs/scenarios.md); the path, a matrix of
event types by contexts, learns them. For it the input representation carries each event's type as a
one-hot after its ``d_model`` values (the width is ``input_width``): everything that cuts, masks or
compacts events (removal, faithfulness, integrated gradients) moves the type with the event, so a
session with events removed has the context the removals leave, and the attribution methods see the
type as part of the event.

Padding: ``mask`` is True for real events; padded keys are excluded from every softmax and the CLS
position is always a valid key, so padding never changes a session's logit.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F
from torch import nn

from attribution.errors import InputError
from attribution.features import CONTINUOUS, CONTINUOUS_BEFORE_DWELL, FeatureMismatch, Vocabularies
from attribution.io import join, read_bytes, write_bytes

if TYPE_CHECKING:
    from attribution.config import ModelConf

ARTIFACT_FORMAT = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model_config.json"
VOCAB_FILE = "vocab.json"
SHA_FILE = "model.sha256"
CONTEXT_FIELD = "event_names"  # the field whose values the context path's matrix is indexed by
CONTEXT_SHARPNESS = 3.0  # a type seen n times before an event counts 1 - exp(-3 n) in its context
MEMBERS_DIR = "members"  # the ensemble's other members (train.ensemble_members), one safetensors file each


class ArtifactError(ValueError):
    """A model directory that can't be trusted or used: missing files, a checksum mismatch, or weights
    that don't fit the configuration."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild the network; saved as JSON beside the weights."""

    fields: tuple[str, ...]
    vocab_sizes: tuple[int, ...]
    max_length: int
    d_model: int = 192
    n_heads: int = 6
    n_layers: int = 3
    ff_dim: int = 512
    dropout: float = 0.1
    field_dim: int = 32
    continuous_dim: int = 16
    continuous: tuple[str, ...] = CONTINUOUS
    # False (new models): the input representation has no constant offset, so the all-<PAD> event is the
    # zero vector and gradient x input measures each event against it. True: the layout of artifacts
    # saved before this field existed, kept loadable.
    input_bias: bool = False
    # The additive per-event path's rank (0: none, as in artifacts saved before the field existed).
    additive_rank: int = 0
    # Events attend to themselves and earlier events only (the CLS token to all); False before it existed.
    causal_events: bool = False
    # A learned embedding of each event's distance from the session's last event, capped here (0: none).
    end_distance: int = 0
    # The context path (module docstring): an event-type-by-context matrix on the logit; False before it existed.
    context: bool = False

    @property
    def context_types(self) -> int:
        """The width of the event-type one-hot the context path adds to the input representation (the
        event-type field's vocabulary, <PAD>'s column included and always 0); 0 without the path."""
        return self.vocab_sizes[self.fields.index(CONTEXT_FIELD)] if self.context else 0

    @property
    def input_width(self) -> int:
        """The width of an event's input representation: ``d_model``, plus the context path's one-hot."""
        return self.d_model + self.context_types

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(doc: dict) -> ModelSpec:
        known = set(ModelSpec.__dataclass_fields__)
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ArtifactError(f"{CONFIG_FILE}: unknown model keys {unknown}")
        tuples = {k: tuple(v) for k, v in doc.items() if isinstance(v, list)}
        # What artifacts saved before a field existed had: the offset, and the time since the previous event.
        earlier = {"input_bias": True, "continuous": CONTINUOUS_BEFORE_DWELL}
        return ModelSpec(**{**earlier, **doc, **tuples})

    @staticmethod
    def of(model_conf: ModelConf, vocab: Vocabularies, max_length: int) -> ModelSpec:
        return ModelSpec(
            fields=vocab.fields,
            vocab_sizes=tuple(vocab.size(f) for f in vocab.fields),
            max_length=max_length,
            d_model=model_conf.d_model,
            n_heads=model_conf.n_heads,
            n_layers=model_conf.n_layers,
            ff_dim=model_conf.ff_dim,
            dropout=model_conf.dropout,
            field_dim=model_conf.field_dim,
            continuous_dim=model_conf.continuous_dim,
            additive_rank=model_conf.additive_rank,
            causal_events=model_conf.causal_events,
            end_distance=model_conf.end_distance,
            context=model_conf.context,
        )


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.head_dim, self.dropout = n_heads, d_model // n_heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor,
        need_attention: bool,
        cls_only: bool = False,
        causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``cls_only``: queries from position 0 only (the output is (B, 1, d)); keys and values still come
        from every position, so that row is exactly the full computation's first row. ``causal``: a query
        at an event's position attends to the earlier events and itself only, so an event's representation
        never depends on a later one (position 0, the CLS token, attends to every position)."""
        b, n, d = x.shape
        if cls_only:
            w, bias = self.qkv.weight, self.qkv.bias
            q = F.linear(x[:, :1], w[:d], bias[:d]).view(b, 1, self.n_heads, self.head_dim).transpose(1, 2)
            k, v = F.linear(x, w[d:], bias[d:]).view(b, n, 2, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        else:
            q, k, v = self.qkv(x).view(b, n, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        rows = q.shape[2]
        allowed = key_mask[:, None, None, :]  # (B, 1, 1, N): True = may attend to this key
        if causal and not cls_only:
            earlier = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
            earlier[1:, 0] = False  # nor the CLS token: it has read the later events
            earlier[0] = True  # the CLS token reads every event
            allowed = allowed & earlier[None, None]
        p_drop = self.dropout if self.training else 0.0
        if need_attention:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
            probs = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
            ctx = F.dropout(probs, p_drop, self.training) @ v
        else:
            probs = None
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p_drop)
        return self.out(ctx.transpose(1, 2).reshape(b, rows, d)), probs


class EncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer: x + Attn(LN(x)); x + FF(LN(x))."""

    def __init__(self, d_model: int, n_heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_dim, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor,
        need_attention: bool = False,
        cls_only: bool = False,
        causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``cls_only``: the layer's output at position 0 only, (B, 1, d); ``causal``: see SelfAttention."""
        a, probs = self.attn(self.norm1(x), key_mask, need_attention, cls_only, causal)
        x = (x[:, :1] if cls_only else x) + self.drop(a)
        x = x + self.drop(self.ff(self.norm2(x)))
        return x, probs


class SessionTransformer(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        if spec.d_model % spec.n_heads:
            raise ValueError(f"d_model {spec.d_model} is not divisible by n_heads {spec.n_heads}")
        self.spec = spec
        self.embeddings = nn.ModuleDict(
            {
                f: nn.Embedding(size, spec.field_dim, padding_idx=0)
                for f, size in zip(spec.fields, spec.vocab_sizes, strict=True)
            }
        )
        # No bias in the input representation (see ModelSpec.input_bias): the learned positions, added
        # right after, absorb any constant offset, so the network is as expressive as with one.
        self.continuous = nn.Linear(len(spec.continuous), spec.continuous_dim, bias=spec.input_bias)
        self.project = nn.Linear(
            len(spec.fields) * spec.field_dim + spec.continuous_dim, spec.d_model, bias=spec.input_bias
        )
        self.cls = nn.Parameter(torch.zeros(1, 1, spec.d_model))
        self.position = nn.Embedding(spec.max_length + 1, spec.d_model)  # 0 is the CLS position
        self.layers = nn.ModuleList(
            EncoderLayer(spec.d_model, spec.n_heads, spec.ff_dim, spec.dropout) for _ in range(spec.n_layers)
        )
        self.head = nn.Sequential(
            nn.LayerNorm(spec.d_model),
            nn.Linear(spec.d_model, spec.d_model),
            nn.GELU(),
            nn.Dropout(spec.dropout),
            nn.Linear(spec.d_model, 1),
        )
        if spec.additive_rank:
            # The additive path: an event's term is linear in its representation (no offset, so the empty
            # event adds exactly 0) and scaled per position, one weight per rank and position. The position
            # weights start at 0: a position few sessions reach keeps a weight near 0 instead of the
            # weight every position would start with, so its events don't count as much as early ones
            # without evidence.
            self.event_value = nn.Linear(spec.d_model, spec.additive_rank, bias=False)
            self.event_position = nn.Embedding(spec.max_length + 1, spec.additive_rank)
        if spec.end_distance:
            self.end_embedding = nn.Embedding(spec.end_distance + 1, spec.d_model)
        if spec.context:
            if CONTEXT_FIELD not in spec.fields:
                raise ValueError(f"the context path needs the {CONTEXT_FIELD} field; the model has {spec.fields}")
            # rows: the event's type; columns: the first of it after each type, a repeat, first, last
            self.context_matrix = nn.Parameter(torch.zeros(spec.context_types, spec.context_types + 3))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for emb in self.embeddings.values():
            assert isinstance(emb, nn.Embedding)
            nn.init.normal_(emb.weight, std=0.02)
            with torch.no_grad():
                emb.weight[0].zero_()
        nn.init.normal_(self.cls, std=0.02)
        nn.init.normal_(self.position.weight, std=0.02)
        if self.spec.additive_rank:
            nn.init.normal_(self.event_value.weight, std=0.02)
            nn.init.zeros_(self.event_position.weight)
        if self.spec.end_distance:
            nn.init.normal_(self.end_embedding.weight, std=0.02)
        if self.spec.context:
            nn.init.zeros_(self.context_matrix)  # the model starts as without the path

    def context_terms(self, types: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The context path's term of every event (B, L) from the events' type one-hots ``types`` (B, L,
        T); 0 where ``mask`` is False. A session's valid events come first, in order (as everywhere in
        this model). The context of event i, of type t, has four parts (``W``'s columns in this order):

        - per type u, whether i is the first t after the session's first u: the session has "a u before
          a t" and i is where it happens, so the pair counts once per session, as the pair table reads it;
        - whether a t came before i (a repeat), as 1 - exp(-3 n) for n of them;
        - whether i is the session's first event, and whether it is the last.

        Which events qualify is read from the one-hots' support; the terms scale with the one-hots'
        values (the pair's with both events'), so along integrated gradients' path from the <PAD> event
        (the one-hots from 0 to 1) they are smooth and the quadrature stays exact."""
        b, n, t = types.shape
        if n == 0:  # the empty session (every event removed): no events, no terms
            return types.new_zeros(b, 0)
        onehot = types * mask[..., None].to(types.dtype)
        seen = onehot > 0
        pos = torch.arange(n, device=types.device)
        never = torch.full((), n, device=types.device)
        # the position of each type's first event (n where absent) and its one-hot value there
        first_at = torch.where(seen, pos[None, :, None], never).amin(1)  # (B, T)
        first_value = (onehot * (pos[None, :, None] == first_at[:, None, :])).sum(1)  # (B, T)
        # per event, the position of the previous event of its own type (-1: none)
        last_seen = torch.where(seen, pos[None, :, None], torch.full((), -1, device=types.device)).cummax(1).values
        previous = torch.cat([last_seen.new_full((b, 1, t), -1), last_seen[:, :-1]], dim=1)
        own = seen.to(types.dtype)
        previous_same = (previous * own).sum(-1) - (1 - own.sum(-1))  # (B, L); -1 for padding
        after_first = (first_at[:, None, :] < pos[None, :, None]) & (previous_same[..., None] < first_at[:, None, :])
        pair = after_first.to(types.dtype) * first_value[:, None, :] * mask[..., None].to(types.dtype)
        count_before = onehot.cumsum(1) - onehot
        repeat = ((1.0 - torch.exp(-CONTEXT_SHARPNESS * count_before)) * own).sum(-1, keepdim=True)
        index = mask.long().cumsum(1)  # 1 at the first event, the session's length at the last
        first = ((index == 1) & mask).to(types.dtype)[..., None]
        last = ((index == mask.sum(1, keepdim=True)) & mask).to(types.dtype)[..., None]
        context = torch.cat([pair, repeat, first, last], dim=-1)
        return ((onehot @ self.context_matrix) * context).sum(-1)

    def embedding_penalty(self) -> torch.Tensor:
        """The ridge penalty of ``train.embedding_ridge``: over every categorical field's values, the sum of
        the squared norms of their projected embeddings (each value's own part of the input representation,
        ``W_f e_v``). <PAD> (always 0) and <UNK> (every rare value pooled) are left out.

        One penalty per value, whatever its frequency: relative to the data, it weighs most on the values
        seen in fewest sessions. Under Adam, whose steps are about the same size for a rarely and a
        frequently updated row, a store seen in a handful of sessions otherwise learns an effect as large
        as a popular store's from a few chance outcomes. It is the ridge regression's prior, in the model.

        Computed as ``sum((E G) * E)`` with ``G = W_f^T W_f`` (field_dim x field_dim), so its cost is the
        vocabulary x field_dim^2, not x d_model."""
        total = self.project.weight.new_zeros(())
        for f in self.spec.fields:
            emb = self.embeddings[f]
            assert isinstance(emb, nn.Embedding)
            w, rows = self.field_projection(f), emb.weight[2:]  # (d, field_dim), (values, field_dim)
            total = total + ((rows @ (w.T @ w)) * rows).sum()
        return total

    def context_penalty(self) -> torch.Tensor:
        """The ridge penalty of ``train.context_ridge``: the sum of the context path's squared weights (0
        without the path)."""
        if not self.spec.context:
            return self.project.weight.new_zeros(())
        return (self.context_matrix**2).sum()

    def field_projection(self, field: str) -> torch.Tensor:
        """The block of the projection that a field's embedding goes through, (d_model, field_dim):
        :meth:`represent` concatenates the fields' embeddings in ``spec.fields`` order."""
        i, width = self.spec.fields.index(field), self.spec.field_dim
        return self.project.weight[:, i * width : (i + 1) * width]

    def represent(self, tokens: dict[str, torch.Tensor], continuous: torch.Tensor) -> torch.Tensor:
        """The per-event input representation (B, L, ``spec.input_width``): the projection (d_model), then
        with the context path the event type's one-hot (<PAD> is all 0)."""
        parts = [self.embeddings[f](tokens[f]) for f in self.spec.fields]
        parts.append(self.continuous(continuous))
        x = self.project(torch.cat(parts, dim=-1))
        if self.spec.context:
            types = F.one_hot(tokens[CONTEXT_FIELD], self.spec.context_types).to(x.dtype)
            types[..., 0] = 0.0
            x = torch.cat([x, types], dim=-1)
        return x

    def forward_from_representation(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        need_attention: bool = False,
        positions: Optional[torch.Tensor] = None,
        all_positions: Optional[bool] = None,
    ) -> tuple[torch.Tensor, Optional[list[torch.Tensor]]]:
        """Logits (B,) from input representations ``x`` (B, L, ``spec.input_width``) and ``mask`` (B, L, True = event).

        The head reads the CLS position of the last layer only, so by default (``all_positions`` None)
        in eval mode the last layer is computed for that position alone: its queries, attention output,
        feed-forward and residual for one row instead of L+1, while its keys and values still cover
        every event. The logit, and its gradient with respect to ``x``, are the full computation's. In
        training mode every position is computed, so dropout draws the same random numbers as it
        always has and a given seed trains the same model. ``all_positions=True`` forces the full last
        layer.

        With ``need_attention`` also returns, per layer, the attention probabilities (B, H, L+1, L+1),
        except the last layer's when it is computed for the CLS position alone: (B, H, 1, L+1), its
        first row; index 0 is the CLS position, 1.. the events.

        ``positions`` (B, L), 1-based, places each event at that position instead of 1..L: a session
        with some events masked out, compacted to its remaining events at their original positions,
        gives exactly the logit of the masked session (masked events are never a key, so nothing else
        sees them), at the cost of the remaining events only.
        """
        b, n, width = x.shape
        if n > self.spec.max_length:
            raise FeatureMismatch(f"sessions of {n} events exceed the model's max_length {self.spec.max_length}")
        if width != self.spec.input_width:
            raise FeatureMismatch(f"input representations of width {width}; the model's is {self.spec.input_width}")
        types = x[..., self.spec.d_model :] if self.spec.context else None
        x = x[..., : self.spec.d_model]
        if all_positions is None:
            all_positions = self.training
        if positions is None:
            placed = self.position.weight[: n + 1]
        else:
            cls_position = torch.zeros(b, 1, dtype=positions.dtype, device=positions.device)
            placed = self.position(torch.cat([cls_position, positions], dim=1))
        h = torch.cat([self.cls.expand(b, 1, -1), x], dim=1) + placed
        if self.spec.end_distance:
            # each event's distance from the last one of its session (valid events come first, in order)
            after = (mask.sum(1, keepdim=True) - mask.long().cumsum(1)).clamp(0, self.spec.end_distance)
            ends = self.end_embedding(after) * mask[..., None]
            h = h + torch.cat([h.new_zeros(b, 1, h.shape[-1]), ends], dim=1)  # nothing at the CLS position
        key_mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=mask.device), mask], dim=1)
        attention: list[torch.Tensor] | None = [] if need_attention else None
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h, probs = layer(
                h, key_mask, need_attention, cls_only=i == last and not all_positions, causal=self.spec.causal_events
            )
            if attention is not None:
                attention.append(probs)
        logit = self.head(h[:, 0]).squeeze(-1)
        if self.spec.additive_rank:
            index = positions if positions is not None else torch.arange(1, n + 1, device=x.device).expand(b, n)
            terms = (self.event_value(x) * self.event_position(index)).sum(-1)  # (B, L)
            logit = logit + terms.masked_fill(~mask, 0.0).sum(-1)
        if types is not None:
            logit = logit + self.context_terms(types, mask).sum(-1)
        return logit, attention

    def forward(self, tokens: dict[str, torch.Tensor], continuous: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.forward_from_representation(self.represent(tokens, continuous), mask)[0]


def to_tensors(
    batch: dict, fields: tuple[str, ...], device: torch.device | str = "cpu"
) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """A padded numpy batch from :meth:`EncodedSessions.batch` -> (tokens, continuous, mask) tensors."""
    tokens = {f: torch.from_numpy(batch[f]).to(device, non_blocking=True) for f in fields}
    return (
        tokens,
        torch.from_numpy(batch["continuous"]).to(device, non_blocking=True),
        torch.from_numpy(batch["mask"]).to(device, non_blocking=True),
    )


# --------------------------------------------------------------------------------------------------
# Artifact: never pickle. Weights are safetensors (a JSON header and raw tensors), the rest JSON.
# --------------------------------------------------------------------------------------------------


def weights_bytes(model: nn.Module) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_artifact(
    location: str,
    weights: bytes,
    spec: ModelSpec,
    vocab: Vocabularies,
    extra: dict | None = None,
    members: Sequence[bytes] = (),
) -> str:
    """Write the model directory; returns the weights' sha256. ``members``: the ensemble's other members'
    weights (same spec and vocabularies), under ``members/``. The config goes last, so a directory
    without it (a crash midway) is refused at load rather than half-used."""
    sha = sha256_hex(weights)
    listed = []
    for i, member in enumerate(members, start=1):
        name = f"{MEMBERS_DIR}/member_{i}.safetensors"
        write_bytes(join(location, name), member)
        listed.append({"file": name, "weights_sha256": sha256_hex(member)})
    config = {
        "format": ARTIFACT_FORMAT,
        "model": spec.to_dict(),
        "weights_sha256": sha,
        "vocab_sha256": vocab.sha256(),
        "members": listed,
        **(extra or {}),
    }
    write_bytes(join(location, WEIGHTS_FILE), weights)
    write_bytes(join(location, VOCAB_FILE), vocab.to_json().encode())
    write_bytes(join(location, SHA_FILE), f"{sha}  {WEIGHTS_FILE}\n".encode())
    write_bytes(join(location, CONFIG_FILE), json.dumps(config, indent=1).encode())
    return sha


@dataclass
class LoadedModel:
    model: SessionTransformer
    spec: ModelSpec
    vocab: Vocabularies
    sha256: str
    config: dict
    members: list[SessionTransformer] = field(default_factory=list)  # the ensemble's others (may be none)

    @property
    def ensemble(self) -> list[SessionTransformer]:
        """The model, then the other members: what the removal effects average over."""
        return [self.model, *self.members]


def _readable(path: str) -> bool:
    try:
        read_bytes(path)
    except InputError:
        return False
    return True


def read_artifact(location: str) -> tuple[bytes, dict, Vocabularies]:
    """Read and verify a model directory's bytes: (weights, config, vocabularies)."""
    try:
        config = json.loads(read_bytes(join(location, CONFIG_FILE)))
        weights = read_bytes(join(location, WEIGHTS_FILE))
        vocab_text = read_bytes(join(location, VOCAB_FILE)).decode()
    except InputError as exc:
        if not _readable(join(location, CONFIG_FILE)) and not _readable(join(location, WEIGHTS_FILE)):
            raise ArtifactError(
                f"no model at {location}: train one first (jobs/train.py; from a cold start, scripts/daily.sh "
                "init on the days before the first day to attribute)"
            ) from exc
        raise ArtifactError(f"model directory {location} is incomplete: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{join(location, CONFIG_FILE)}: not valid JSON ({exc})") from exc
    if config.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(f"{location}: artifact format {config.get('format')!r}, this code reads {ARTIFACT_FORMAT}")
    sha = sha256_hex(weights)
    if sha != config.get("weights_sha256"):
        raise ArtifactError(
            f"{join(location, WEIGHTS_FILE)}: sha256 {sha} does not match the recorded "
            f"{config.get('weights_sha256')}; the weights were changed or belong to another model - refusing to load"
        )
    vocab = Vocabularies.from_json(vocab_text)
    if vocab.sha256() != config.get("vocab_sha256"):
        raise ArtifactError(f"{join(location, VOCAB_FILE)}: does not match the vocabulary this model was trained with")
    return weights, config, vocab


def read_members(location: str, config: dict) -> tuple[bytes, ...]:
    """The ensemble members' weights a model directory's config lists, each verified by its sha256."""
    out = []
    for member in config.get("members") or []:
        path = join(location, member["file"])
        try:
            weights = read_bytes(path)
        except InputError as exc:
            raise ArtifactError(f"model directory {location} lacks ensemble member {member['file']}: {exc}") from exc
        if sha256_hex(weights) != member["weights_sha256"]:
            raise ArtifactError(
                f"{path}: sha256 does not match the recorded {member['weights_sha256']} - refusing to load"
            )
        out.append(weights)
    return tuple(out)


def build_model(weights: bytes, config: dict, vocab: Vocabularies, members: Sequence[bytes] = ()) -> LoadedModel:
    """Rebuild the network (and the ensemble's other members) from verified bytes (no pickle:
    safetensors parses a JSON header and copies raw tensor data)."""
    spec = ModelSpec.from_dict(config["model"])
    sizes = tuple(vocab.size(f) for f in spec.fields) if set(spec.fields) <= set(vocab.fields) else None
    if sizes != spec.vocab_sizes:
        raise ArtifactError("the model's vocabulary sizes do not match vocab.json")
    return LoadedModel(
        model=_network(spec, weights),
        spec=spec,
        vocab=vocab,
        sha256=config["weights_sha256"],
        config=config,
        members=[_network(spec, w) for w in members],
    )


def _network(spec: ModelSpec, weights: bytes) -> SessionTransformer:
    """One network of ``spec`` with ``weights``, in eval mode with frozen parameters."""
    from safetensors.torch import load

    model = SessionTransformer(spec)
    try:
        state = load(weights)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type for a bad header
        raise ArtifactError(f"the weights are not a safetensors file ({exc}); refusing to load") from exc
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or extra or wrong:
        raise ArtifactError(
            f"the weights do not fit the model config: missing {missing[:3]}, unexpected {extra[:3]}, "
            f"wrong shape {wrong[:3]}"
        )
    model.load_state_dict(state)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_artifact(location: str) -> LoadedModel:
    """Load and verify a model directory, with its ensemble members. The models come back in eval mode
    with frozen parameters."""
    weights, config, vocab = read_artifact(location)
    return build_model(weights, config, vocab, read_members(location, config))


# --------------------------------------------------------------------------------------------------
# Versions: a model trained for a window of days is kept under <model_path>/versions/<window>/
# --------------------------------------------------------------------------------------------------

LATEST_FILE = "LATEST"  # names the version whose training window ends last


def version_of(date: str, date_to: Optional[str]) -> str:
    """A training window's version name: ``2025-01-15`` or ``2025-01-01_to_2025-01-28``."""
    return date if date_to is None else f"{date}_to_{date_to}"


def _window_end(version: str) -> tuple[str, str]:
    start, _, end = version.partition("_to_")
    return (end or start, start)


def version_location(model_path: str, version: str) -> str:
    return join(join(model_path, "versions"), version)


def latest_version(model_path: str) -> Optional[str]:
    """The version LATEST names, or None when the model directory has no versions."""
    try:
        return read_bytes(join(model_path, LATEST_FILE)).decode().strip() or None
    except (InputError, FileNotFoundError):
        return None


def mark_latest(model_path: str, version: str) -> bool:
    """Point LATEST at ``version`` when its window ends no earlier than the current latest's (a backfill
    of an older window does not replace a newer model). Returns whether it did."""
    current = latest_version(model_path)
    if current is not None and _window_end(version) < _window_end(current):
        return False
    write_bytes(join(model_path, LATEST_FILE), f"{version}\n".encode())
    return True


def model_location(model_path: str, version: Optional[str] = None) -> str:
    """The model directory to use: ``version`` under ``model_path``, else the latest version, else
    ``model_path`` itself (a model trained outside day mode)."""
    if version:
        return version_location(model_path, version)
    latest = latest_version(model_path)
    return version_location(model_path, latest) if latest else model_path
