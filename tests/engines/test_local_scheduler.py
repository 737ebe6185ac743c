"""Without a ``distributed`` client, Dask collections run on Dask's local scheduler."""

from __future__ import annotations

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd

import stablefit


def test_a_dask_dataframe_fits_without_a_cluster():
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"a": rng.normal(size=500), "b": rng.normal(size=500)})
    frame["y"] = 1.5 - frame.a + 4 * frame.b + rng.normal(size=500)
    local = stablefit.fit(frame, target="y")
    result = stablefit.fit(dd.from_pandas(frame, npartitions=3), target="y")
    digits = local.certificate.digits
    np.testing.assert_allclose(result.params, local.params, rtol=10.0**-digits, atol=0)
    x = da.from_array(frame.a.to_numpy(), chunks=200)
    polynomial = stablefit.fit_polynomial(x, da.from_array(frame.y.to_numpy(), chunks=150), 2)
    np.testing.assert_allclose(
        polynomial.params, stablefit.fit_polynomial(frame.a, frame.y, 2).params, rtol=1e-12
    )
