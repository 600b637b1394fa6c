"""The trained transformer as an MLflow pyfunc model: it scores a sessions DataFrame.

MLflow logs this file as the model's code ("models from code"), with the model directory (safetensors
weights, model config, vocabularies) as its artifact, and runs it when the model is loaded:
``mlflow.pyfunc.load_model("models:/session-conversion@champion").predict(sessions)``.

The input is rows of the sessions table (``sessions/``, one row per session: the per-event list columns
the model reads, ``seconds_from_prev``, ``event_ranks``, ``is_new_vertical``; ``session_id`` is carried
through when present). The output has one row per input row, in order: ``prediction`` (P(convert)) and
``logit``, computed as the attribution stage computes them (the same encoding, the same batched forward),
so they equal the event table's ``prediction`` for the same model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from attribution.attribute import attribute_sessions
from attribution.features import encode_sessions
from attribution.kernels import AttributionOptions
from attribution.model import load_artifact
from attribution.schema import SESSION_ID
from attribution.tracking import MODEL_ARTIFACT

SCORE_ONLY = AttributionOptions(methods=())  # the shared forward alone: logit and prediction


class SessionConversionModel(PythonModel):
    """P(convert) of each session of a sessions DataFrame, from the verified model directory."""

    def load_context(self, context: Any) -> None:
        self.loaded = load_artifact(context.artifacts[MODEL_ARTIFACT])  # verifies the sha256 recorded

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        batch_size = int((params or {}).get("batch_size", 256))
        if model_input.empty:
            return pd.DataFrame({"prediction": pd.Series(dtype=np.float64), "logit": pd.Series(dtype=np.float64)})
        table = pa.Table.from_pandas(model_input, preserve_index=False)
        encoded = encode_sessions(table, self.loaded.vocab, self.loaded.spec.continuous)
        scores = attribute_sessions(self.loaded.model, encoded, SCORE_ONLY, batch_size=batch_size)
        out = pd.DataFrame({"prediction": scores["prediction"], "logit": scores["logit"]}, index=model_input.index)
        if SESSION_ID in model_input:
            out.insert(0, SESSION_ID, model_input[SESSION_ID].to_numpy())
        return out.astype({"prediction": np.float64, "logit": np.float64})


set_model(SessionConversionModel())
