"""The PyTorch tests train tiny models: one intra-op thread is faster than two that wait
for each other (and for other jobs on a shared machine)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)
