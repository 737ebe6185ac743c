"""Keep TensorFlow's native start-up banners off the terminal of a stablefit command."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_tensorflow() -> Iterator[None]:
    """Silence what TensorFlow's C++ side prints on stderr (oneDNN and absl banners).

    Python exceptions still propagate; only the file descriptor is redirected, for the
    duration of the block (importing Keras and building the first model).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
