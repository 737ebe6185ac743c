"""What a command loads before it starts work: SciPy's solvers only for the fit, Parquet
only for Parquet files, scikit-learn only for the estimator; on a small file, neither
numba nor SciPy's solvers at all; each command its own module and not the others'; and
NumPy not before the command has set its BLAS threads. (numba's first compiled call loads
SciPy's BLAS later, whatever the command.)"""

from __future__ import annotations

import subprocess
import sys


def loaded_after(code: str) -> set[str]:
    program = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_the_doctor_command_starts_without_scipy_parquet_or_sklearn() -> None:
    loaded = loaded_after("import stablefit.cli.main as cli\ncli.build_parser()")
    assert not loaded & {"scipy.linalg", "scipy.special", "pyarrow.parquet", "sklearn"}
    assert "stablefit.diagnose" in loaded


def test_a_small_file_is_fitted_and_diagnosed_without_numba_scipy_linalg_or_other_commands(
    tmp_path,
) -> None:
    csv = tmp_path / "small.csv"
    csv.write_text("x,y\n1,2\n2,4.1\n3,5.9\n4,8.2\n")
    run = (
        "import contextlib, io\nfrom stablefit.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main([{!r}, {!r}, '--target', 'y'])"
    )
    fitted = loaded_after(run.format("fit", str(csv)))
    assert "stablefit.pipeline" in fitted
    assert not fitted & {"numba", "scipy.linalg", "matplotlib", "pandas"}
    assert not fitted & {"stablefit.cli.doctor", "stablefit.cli.train", "rich.table"}
    assert not fitted & {"stablefit.diagnose.checks", "stablefit.report.html.charts"}
    diagnosed = loaded_after(run.format("doctor", str(csv)))
    assert "stablefit.diagnose.simulation" in diagnosed
    assert not {name.split(".")[0] for name in diagnosed} & {"numba", "scipy", "matplotlib"}
    assert not diagnosed & {"stablefit.cli.fit", "stablefit.cli.train", "stablefit.pipeline"}
    assert not diagnosed & {"stablefit.report.html.charts", "rich.table"}


def test_the_entry_point_loads_no_numpy_so_that_blas_threads_are_set_first() -> None:
    loaded = loaded_after("import stablefit.cli.main")
    assert not loaded & {"numpy", "pyarrow", "rich", "stablefit.diagnose.checks"}
    assert "stablefit.diagnose" in loaded  # the function diagnose, without its work's imports


def test_the_fit_functions_are_the_functions_once_the_pipeline_is_imported() -> None:
    import stablefit.pipeline

    assert stablefit.fit is stablefit.pipeline.fit
    assert stablefit.fit_polynomial is stablefit.pipeline.fit_polynomial
    assert "fit" in dir(stablefit) and "StableLinearRegression" in dir(stablefit)
    assert stablefit.fit([[0.0], [1.0], [2.0]], [1.0, 3.0, 5.0]).coef[0] == 2.0
