"""``stablefit fit --cov-type/--cluster/--weights`` and ``predict --intervals`` on real files:
Grunfeld's panel as ``pandas.to_csv`` writes it, against statsmodels and the library."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

import stablefit
from stablefit.errors import StablefitInputError, StablefitWarning


@pytest.fixture(scope="module")
def grunfeld_frame() -> pd.DataFrame:
    frame = sm.datasets.grunfeld.load_pandas().data
    return frame.assign(w=np.random.default_rng(0).uniform(0.5, 2.0, len(frame)).round(3))


@pytest.fixture
def grunfeld_csv(tmp_path, grunfeld_frame):
    path = tmp_path / "grunfeld.csv"
    grunfeld_frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("cluster", ["firm", "firm,year"])
def test_cluster_by_a_text_column_and_two_ways(
    grunfeld_csv, grunfeld_frame, tmp_path, run_cli, cluster
):
    out = tmp_path / "fit.json"
    run = run_cli("fit", grunfeld_csv, "--target", "invest", "--cluster", cluster, "--json", out)
    assert run.code == 0, run.err
    report = json.loads(out.read_text())
    names = cluster.split(",")
    features = [c for c in ("value", "capital", "year", "w") if c not in names]
    assert list(report["features"]) == features
    codes = np.column_stack([pd.factorize(grunfeld_frame[n])[0] for n in names]).squeeze()
    # The year (1935-1954) as a feature costs statsmodels 4 digits (condition number 9e5),
    # so it fits the centered features: the same slopes and their covariance.
    centered = grunfeld_frame[features] - grunfeld_frame[features].mean()
    theirs = sm.OLS(grunfeld_frame["invest"], sm.add_constant(centered)).fit(
        cov_type="cluster", cov_kwds={"groups": codes}, use_t=True
    )
    ours = [report["features"][f]["stderr"] for f in features]
    np.testing.assert_allclose(ours, theirs.bse[1:], rtol=1e-10)
    library = stablefit.fit(
        grunfeld_frame[[*features, "invest", *names]],
        target="invest",
        groups=names if len(names) == 2 else names[0],
    )
    assert report["intercept"]["stderr"] == library.intercept_stderr
    assert report["covariance"]["type"] == "cluster"
    assert report["covariance"]["groups"] == names
    assert report["covariance"]["n_groups"] == [{"firm": 11, "year": 20}[n] for n in names]
    assert report["fvalue"] == pytest.approx(theirs.fvalue, rel=1e-10)
    assert "cluster" in run.out and "clusters of 'firm'" in " ".join(run.out.split())


def test_weights_and_hc1_match_the_library(grunfeld_csv, grunfeld_frame, tmp_path, run_cli):
    out = tmp_path / "fit.json"
    run = run_cli(
        "fit",
        grunfeld_csv,
        "--target",
        "invest",
        "--weights",
        "w",
        "--cov-type",
        "HC1",
        "--drop-non-numeric",
        "--json",
        out,
        "--normal",
    )
    assert run.code == 0, run.err
    report = json.loads(out.read_text())
    library = stablefit.fit(
        grunfeld_frame,
        target="invest",
        weights="w",
        cov_type="HC1",
        use_t=False,
        drop_non_numeric=True,
    )
    assert list(report["features"]) == ["value", "capital", "year"]
    assert report["weights"] == "w"
    assert report["covariance"]["use_t"] is False
    for j, name in enumerate(library.feature_names):
        assert report["features"][name]["stderr"] == library.stderr[j]
        assert report["features"][name]["p"] == library.pvalues[j]
    for key in ("rsquared", "rsquared_adj", "llf", "aic", "bic", "fvalue", "condition_number"):
        assert report[key] == getattr(library, key), key
    assert "P>|z|" in run.out and "weighted least squares" in run.out


def test_bad_weights_in_a_file_exit_2_naming_lines(tmp_path, run_cli):
    data = tmp_path / "w.csv"
    data.write_text("x,w,y\n1,1,2\n2,0,3\n3,1,5\n4,-1,4\n5,2,7\n")
    run = run_cli("fit", data, "--target", "y", "--weights", "w")
    assert run.code == 2
    assert "2 are not (lines 3, 5)" in run.err and "Traceback" not in run.err
    run = run_cli("fit", data, "--target", "y", "--cluster", "a,b,c")
    assert run.code == 2 and "--cluster" in run.err
    run = run_cli("fit", data, "--target", "y", "--cluster", "nope")
    assert run.code == 2 and "'nope'" in run.err
    run = run_cli("fit", data, "--target", "y", "--cluster", "x", "--weights", "x")
    assert run.code == 2 and "'x' is named twice" in run.err and "--cluster)" in run.err


@pytest.mark.parametrize(
    ("option", "phrase"),
    [
        (["--cluster", "invest"], "the cluster column 'invest' is the target"),
        (["--cluster", "firm,invest"], "the cluster column 'invest' is the target"),
        (["--weights", "invest"], "the weights column 'invest' is the target"),
    ],
)
def test_the_target_is_neither_weights_nor_cluster(grunfeld_csv, run_cli, option, phrase):
    """Clustering by the target fitted 200 one-row clusters after a warning that the target
    'is never a feature'; weighting by it named its zeros as bad weights."""
    run = run_cli("fit", grunfeld_csv, "--target", "invest", *option)
    assert run.code == 2 and run.out == "", run.out
    assert run.err.count("\n") == 1 and phrase in run.err and "warning" not in run.err
    frame = pd.read_csv(grunfeld_csv)
    named = {"weights": option[1]} if option[0] == "--weights" else {"groups": option[1].split(",")}
    with pytest.raises(StablefitInputError, match=phrase):
        stablefit.fit(frame, target="invest", **named)


def test_saved_model_predicts_with_the_fits_intervals(
    grunfeld_csv, grunfeld_frame, tmp_path, run_cli
):
    model = tmp_path / "model.json"
    run = run_cli("fit", grunfeld_csv, "--target", "invest", "--cluster", "firm", "--save", model)
    assert run.code == 0, run.err
    saved = json.loads(model.read_text())
    assert saved["intervals"]["cov_type"] == "cluster"
    new = tmp_path / "new.csv"
    grunfeld_frame.iloc[:7].drop(columns=["invest", "firm"]).to_csv(new, index=False)
    out = tmp_path / "predictions.csv"
    run = run_cli("predict", model, new, "--intervals", "--alpha", "0.1", "-o", out)
    assert run.code == 0, run.err
    written = pd.read_csv(out)
    library = stablefit.fit(
        grunfeld_frame.drop(columns=["firm"]).assign(firm=grunfeld_frame["firm"]),
        target="invest",
        groups="firm",
    )
    features = grunfeld_frame.iloc[:7][list(library.feature_names)].to_numpy(float)
    expected = library.get_prediction(features).summary_frame(alpha=0.1)
    assert list(written.columns) == ["prediction", *expected.columns[1:]]
    np.testing.assert_allclose(written.to_numpy(), expected.to_numpy(), rtol=1e-15)
    plain = run_cli("predict", model, new, "-o", tmp_path / "plain.csv")
    assert plain.code == 0
    assert list(pd.read_csv(tmp_path / "plain.csv").columns) == ["prediction"]


def test_intervals_at_tiny_alpha_are_finite(grunfeld_csv, grunfeld_frame, tmp_path, run_cli):
    """1 - alpha/2 rounds to 1 below alpha = 1e-16: the quantile came out infinite and every
    interval an empty cell, without a word. SciPy's upper tail (isf) is the reference."""
    from scipy import stats

    model = tmp_path / "model.json"
    fitted = run_cli(
        "fit", grunfeld_csv, "--target", "invest", "--exclude", "firm", "--save", model
    )
    assert fitted.code == 0, fitted.err
    new = tmp_path / "new.csv"
    grunfeld_frame.iloc[:5].drop(columns=["invest", "firm"]).to_csv(new, index=False)
    out = tmp_path / "predictions.csv"
    run = run_cli("predict", model, new, "--intervals", "--alpha", "1e-20", "-o", out)
    assert run.code == 0 and run.err == "", run.err
    written = pd.read_csv(out)
    assert np.isfinite(written.to_numpy()).all()
    library = stablefit.fit(grunfeld_frame, target="invest", drop_non_numeric=True)
    quantile = stats.t.isf(0.5e-20, library.df_resid)
    half = written["mean_ci_upper"] - written["prediction"]
    np.testing.assert_allclose(half, quantile * written["mean_se"], rtol=1e-13)
    np.testing.assert_allclose(
        library.conf_int(1e-20)[:, 1] - library.coef, quantile * library.bse[1:], rtol=1e-13
    )
    tiny = run_cli("predict", model, new, "--intervals", "--alpha", "5e-324")
    assert tiny.code == 2 and tiny.out == "" and "above 1e-323" in tiny.err


def test_clusters_given_with_another_covariance_are_said_to_be_unused(grunfeld_csv, run_cli):
    """--cluster firm --cov-type hc1 printed HC1 errors, firm left out of the features, and no
    word that the clusters were not used."""
    run = run_cli(
        "fit", grunfeld_csv, "--target", "invest", "--cluster", "firm", "--cov-type", "hc1"
    )
    assert run.code == 0, run.err
    assert "Cluster keys 'firm' were given but are not used: the covariance is HC1" in run.out
    frame = pd.read_csv(grunfeld_csv)
    hc1 = stablefit.fit(frame, target="invest", groups="firm", cov_type="HC1")
    assert any("are not used" in note for note in hc1.notes)
    clustered = hc1.get_robustcov("cluster")
    assert not any("are not used" in note for note in clustered.notes)
    assert clustered.cov_type == "cluster" and clustered.n_groups == (11,)


def test_intervals_after_a_weighted_fit_take_the_new_rows_weights(
    grunfeld_csv, grunfeld_frame, tmp_path, run_cli
):
    """After a weighted fit, predict --intervals gave every new row weight 1 without a word:
    prediction intervals of rows of weight 0.5 came out narrower than theirs. statsmodels'
    WLS get_prediction(weights=) is the reference; without --weights the command stops."""
    model = tmp_path / "model.json"
    fitted = run_cli(
        "fit", grunfeld_csv, "--target", "invest", "--weights", "w", "--exclude", "firm",
        "--save", model,
    )  # fmt: skip
    assert fitted.code == 0, fitted.err
    new_rows = grunfeld_frame.iloc[::25].drop(columns=["invest", "firm"])
    new_rows = new_rows.assign(w=np.linspace(0.25, 4.0, len(new_rows)))
    new = tmp_path / "new.csv"
    new_rows.to_csv(new, index=False)
    out = tmp_path / "predictions.csv"
    run = run_cli("predict", model, new, "--intervals", "--weights", "w", "-o", out)
    assert run.code == 0 and run.err == "", run.err
    features = ["value", "capital", "year"]
    wls = sm.WLS(
        grunfeld_frame["invest"],
        sm.add_constant(grunfeld_frame[features]),
        weights=grunfeld_frame["w"],
    ).fit()
    theirs = wls.get_prediction(
        sm.add_constant(new_rows[features], has_constant="add"), weights=new_rows["w"]
    ).summary_frame(alpha=0.05)
    written = pd.read_csv(out)
    # statsmodels fits the raw year (condition number 1e6): agreement to 1e-8, not 1e-15.
    np.testing.assert_allclose(written.iloc[:, 1:], theirs.iloc[:, 1:], rtol=1e-8)
    unit = run_cli("predict", model, new, "--intervals", "-o", tmp_path / "unit.csv")
    assert unit.code == 2 and unit.out == "" and "--weights COL" in unit.err
    assert "fitted with weights 'w'" in unit.err and not (tmp_path / "unit.csv").exists()
    new_rows.assign(w=[1.0, np.nan, 0.0, 2.0, 1.0, -1.0, 1.0, 1.0, 1.0]).to_csv(new, index=False)
    bad = run_cli("predict", model, new, "--intervals", "--weights", "w", "-o", out)
    assert bad.code == 2 and "3 are not (lines 3, 4, 7)" in bad.err, bad.err
    library = stablefit.fit(grunfeld_frame.drop(columns="firm"), target="invest", weights="w")
    with pytest.warns(StablefitWarning, match="take weight 1"):
        library.get_prediction(new_rows[features])


def test_intervals_of_rows_far_out_are_computed_or_named(grunfeld_csv, tmp_path, run_cli):
    """A row at 1e160 has a standard error near 1e159, whose square overflows: its mean_se
    and intervals were empty cells without a word. A bound beyond float64 (a row at 1e298
    at alpha 1e-300) is an empty cell named in the warning, with no NumPy warning."""
    model = tmp_path / "model.json"
    fitted = run_cli("fit", grunfeld_csv, "--target", "invest", "--exclude", "firm,w,year",
                     "--save", model)  # fmt: skip
    assert fitted.code == 0, fitted.err
    library = stablefit.fit(pd.read_csv(grunfeld_csv)[["value", "capital", "invest"]],
                            target="invest")  # fmt: skip
    new = tmp_path / "far.csv"
    new.write_text("value,capital\n1e160,0\n0,1e200\n1e298,0\n")
    out = tmp_path / "predictions.csv"
    run = run_cli("predict", model, new, "--intervals", "-o", out)
    assert run.code == 0 and run.err == "", run.err
    written = pd.read_csv(out)
    # Far out, x'Vx is the variance of the slope times x² (the centering is lost in x).
    expected = np.array([1e160 * library.bse[1], 1e200 * library.bse[2], 1e298 * library.bse[1]])
    np.testing.assert_allclose(written["mean_se"], expected, rtol=1e-13)
    assert np.isfinite(written.to_numpy()).all()
    # A slope of about 0.01 with a standard error of 0.1 at 1e308, at alpha 1e-300.
    rng = np.random.default_rng(4)
    pd.DataFrame({"x": np.arange(40) % 7, "y": rng.normal(size=40)}).to_csv(
        noise := tmp_path / "noise.csv", index=False
    )
    assert run_cli("fit", noise, "--target", "y", "--save", model).code == 0
    new.write_text("x\n1\n1e308\n")
    tiny = run_cli("predict", model, new, "--intervals", "--alpha", "1e-300", "-o", out)
    assert tiny.code == 0 and "overflow encountered" not in tiny.err
    assert "1 row(s) have no prediction or interval" in tiny.err and "(line 3" in tiny.err
    written = pd.read_csv(out)
    assert np.isfinite(written.iloc[1, :2]).all() and written.iloc[1, 2:].isna().all()
