"""What the UDFs share on a Python worker (udfs/worker.py): the model cache, the device choice and the
memory probes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import save_random_model, synthetic_sessions, vocab_of
from udfs import worker


def test_model_cache_is_per_sha_and_device(tmp_path):
    vocab = vocab_of(synthetic_sessions(20, seed=6))
    first_saved = save_random_model(tmp_path / "m1", vocab, seed=1)
    payload = worker.ModelPayload.read(str(tmp_path / "m1"))
    first = worker.cached_model(payload, torch.device("cpu"))
    assert first.sha256 == first_saved.sha256
    assert worker.cached_model(payload, torch.device("cpu")) is first
    other = save_random_model(tmp_path / "m2", vocab, seed=3)
    second = worker.cached_model(worker.ModelPayload.read(str(tmp_path / "m2")), torch.device("cpu"))
    assert second is not first and second.sha256 == other.sha256 != first.sha256
    assert worker.choose_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_the_device_follows_the_gpu_address_spark_gives_the_task():
    name = worker.device_name
    assert name(["1"], cuda_devices=2) == "cuda:1"  # the task's own GPU
    assert name(["3"], cuda_devices=1) == "cuda:0"  # CUDA_VISIBLE_DEVICES narrowed to it: renumbered from 0
    assert name([], cuda_devices=1) == "cuda:0"  # no GPU scheduling, a GPU on the machine
    assert name(["0"], cuda_devices=0) == "cpu"  # given an address, but no CUDA in this process
    assert name([], cuda_devices=0) == "cpu"
    assert worker.task_gpu_addresses() == []  # outside a task


def test_the_worker_peak_is_the_high_water_mark_since_the_task_began():
    """The stage reports each worker's peak resident memory: the most it held, mid-batch included,
    since the task began, not a sample taken between batches."""
    import sys

    if not worker.reset_peak_rss():
        pytest.skip(f"this platform ({sys.platform}) cannot reset the peak resident memory")
    before = worker.rss_mb()
    block = np.ones(200 * 2**20 // 8)  # 200 MiB, touched, then freed
    del block
    assert worker.peak_rss_mb() >= before + 190
    assert worker.rss_mb() < before + 100  # it was given back ...
    worker.reset_peak_rss()
    assert worker.peak_rss_mb() < before + 100  # ... so a new task's peak no longer counts it
