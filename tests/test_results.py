"""README's generated result blocks equal what `python -m figures.results` renders from
docs/results, and every committed slopes.csv is what sim.experiments.analysis computes from the committed
runs (runs.csv.gz): the README tables cannot drift from the files behind them."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from figures import results, tables
from sim.experiments.analysis import compute_slopes

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "results"


def test_readme_blocks_equal_the_rendered_files():
    rendered = tables.render_blocks(DOCS)
    in_readme = tables.readme_blocks((ROOT / "README.md").read_text())
    assert set(in_readme) == set(rendered), (sorted(in_readme), sorted(rendered))
    for key, body in rendered.items():
        assert in_readme[key] == body.strip(), f"README block {key!r} differs from docs/results"


@pytest.mark.parametrize("sweep", sorted(p.parent.name for p in DOCS.glob("*/runs.csv.gz")))
def test_slopes_are_the_analysis_of_the_committed_runs(sweep):
    runs = pd.read_csv(DOCS / sweep / "runs.csv.gz")
    spec = json.loads((DOCS / sweep / "sweep.json").read_text())
    assert runs["vary"].eq(spec["vary"]).all() and sorted(runs["seed"].unique()) == spec["seeds"]
    fresh = compute_slopes(runs, spec["vary"])
    saved = pd.read_csv(DOCS / sweep / "slopes.csv")
    assert list(saved.columns) == list(fresh.columns)
    for c in saved.columns:
        if pd.api.types.is_numeric_dtype(fresh[c]) and not pd.api.types.is_bool_dtype(fresh[c]):
            pd.testing.assert_series_equal(saved[c].astype(float), fresh[c].astype(float),
                                           rtol=1e-5, atol=1e-9, check_names=False)
        else:
            assert saved[c].astype(str).tolist() == fresh[c].astype(str).tolist(), c


def test_manifest_names_every_collected_experiment():
    manifest = pd.read_csv(DOCS / "manifest.csv")
    dirs = {p.name for p in DOCS.iterdir() if p.is_dir()}
    assert dirs <= set(manifest["name"]) <= set(results.NAMES)
    assert manifest["command"].str.startswith("python -m ").all()


def _fake_docs(tmp_path, extra_method=False):
    d = tmp_path / "docs"
    (d / "nu").mkdir(parents=True)
    rows = [dict(quantity="dist", vary="nu", predicted_slope=-0.5, measured_slope=-0.55, ci_low=-0.6,
                 ci_high=-0.47, n_points=5, verdict="agrees", constant_free=True, pred_low=-0.5,
                 pred_high=-0.5, method="shared", bound="Thm 4.1"),
            dict(quantity="gap_pess", vary="nu", predicted_slope=-0.49, measured_slope=0.02, ci_low=-0.03,
                 ci_high=0.05, n_points=5, verdict="shallower", constant_free=False, pred_low=-0.5,
                 pred_high=0.0, method="shared", bound="Cor 4.1")]
    if extra_method:
        rows.append(dict(rows[0], method="oracle", pred_err_ratio=1.234))
    pd.DataFrame(rows).to_csv(d / "nu" / "slopes.csv", index=False)
    (d / "nu" / "sweep.json").write_text(json.dumps(dict(vary="nu", base=dict(Np=100))))
    return d


def test_table_marks_constant_dependent_rows_and_shows_new_methods_and_columns(tmp_path):
    table = tables.slopes_block(_fake_docs(tmp_path, extra_method=True)).splitlines()
    assert table[0].endswith("| pred_err_ratio |")
    assert "| agrees |" in table[2] and "shallower †" in table[3] and "(−0.50 … 0.00)" in table[3]
    assert "| oracle |" in table[4] and "1.234" in table[4]
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- results:slopes -->\nold\n<!-- /results:slopes -->\ny\n")
    tables.write_readme(readme, tmp_path / "docs")
    assert tables.readme_blocks(readme.read_text())["slopes"] == "\n".join(table)


def test_bad_subset_exits_2_with_one_line():
    r = subprocess.run([sys.executable, "-m", "figures.results", "--only", "nu,bogus", "--collect-only"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "bogus" in r.stderr
