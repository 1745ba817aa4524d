"""Shared test set-up."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One intra-op thread: the tensors in these tests are small, and on a shared 2-core
    machine more threads spin-wait and slow small operations by orders of magnitude."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No mirror, an empty cache folder, no downloads (``tmp_path``)."""
    monkeypatch.delenv("GUD_DATA_MIRROR", raising=False)
    monkeypatch.setenv("GUD_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("GUD_OFFLINE", "1")
    return tmp_path
