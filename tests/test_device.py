"""Device selection, CPU threads and mixed precision."""

from __future__ import annotations

import os

import pytest
import torch

from napari_invert.device import autocast, describe_device, resolve_device, set_threads, uses_autocast
from napari_invert.errors import ConfigError

HAS_CUDA = torch.cuda.is_available()


def test_resolve_cpu_and_auto() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if HAS_CUDA else "cpu")
    assert "cpu" in describe_device("cpu")


@pytest.mark.skipif(HAS_CUDA, reason="a CUDA GPU is present")
def test_cuda_requested_without_gpu_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="no CUDA GPU is available"):
        resolve_device("cuda")


def test_unknown_device_rejected() -> None:
    with pytest.raises(ConfigError, match="expected 'auto', 'cpu' or 'cuda'"):
        resolve_device("tpu")


def test_autocast_is_noop_on_cpu() -> None:
    a = torch.randn(4, 4)
    with autocast(torch.device("cpu")):
        out = a @ a
    assert out.dtype == torch.float32
    assert not uses_autocast("cpu")


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_autocast_bf16_on_cuda() -> None:  # pragma: no cover - GPU only
    dev = resolve_device("cuda")
    a = torch.randn(8, 8, device=dev)
    with autocast(dev):
        out = a @ a
    assert out.dtype == (torch.bfloat16 if uses_autocast(dev) else torch.float32)


def test_set_threads() -> None:
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1
        assert torch.get_num_threads() == 1
        assert set_threads(None) == 1
        with pytest.raises(ConfigError):
            set_threads(0)
    finally:
        torch.set_num_threads(before)


def test_entry_points_give_the_thread_settings_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A study, audit or evaluation sets one thread per process; the caller gets its own back,
    also when the call raises."""
    from napari_invert._threads import restores_threads

    @restores_threads
    def study_like(fail: bool) -> int:
        set_threads(1)
        if fail:
            raise RuntimeError("stopped")
        return torch.get_num_threads()

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    try:
        assert study_like(False) == 1
        assert torch.get_num_threads() == 2 and "OMP_NUM_THREADS" not in os.environ
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        with pytest.raises(RuntimeError, match="stopped"):
            study_like(True)
        assert torch.get_num_threads() == 2 and os.environ["OMP_NUM_THREADS"] == "2"
    finally:
        torch.set_num_threads(before)
