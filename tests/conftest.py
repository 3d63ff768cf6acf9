"""Shared setup for every test."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _restore_thread_count():
    """The CLI and the trainers set torch's thread count (the CLI's default is 2); restore it after
    each test, so CI's one-thread leg really runs every test on one thread."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
