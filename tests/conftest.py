"""Fixtures shared by the llm tests (tiny random backbones, one torch thread, offline hub)."""

import pytest


@pytest.fixture
def torch_one_thread(monkeypatch):
    """One torch thread: on a busy 2-core machine two threads are ~100x slower for tiny models."""
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny randomly initialised BERT reward backbone saved to a temporary directory."""
    pytest.importorskip("transformers")
    from llm.tiny import make_tiny_backbone

    return make_tiny_backbone(tmp_path_factory.mktemp("tiny") / "bert")
