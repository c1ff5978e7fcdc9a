"""One torch thread for a test module: small convolutions on 2 shared cores run ~10x faster so."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Autouse in the modules that import it: torch runs single-threaded there, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
