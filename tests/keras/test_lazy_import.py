"""``import stablefit.keras`` must not import Keras: it is an optional dependency."""

from __future__ import annotations

import subprocess
import sys


def test_importing_stablefit_keras_does_not_import_keras() -> None:
    code = (
        "import sys, stablefit, stablefit.keras\n"
        "from stablefit.keras import GuardEvent, NonFiniteTrainingError\n"
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules, "
        "sorted(m for m in sys.modules if 'keras' in m or 'tensorflow' in m)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
