"""Shared fixtures of the flow-backbones tests."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run a test on one thread: tiny matmuls only lose time to thread hand-offs on a shared
    CPU, and one thread makes the measured figures reproducible."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
