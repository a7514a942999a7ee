"""figures.llm_plots draws Figures 1-3 from metrics.csv files alone."""

from __future__ import annotations

import csv

import pytest

pytest.importorskip("matplotlib")

from figures.inputs import METRICS_COLUMNS  # noqa: E402
from figures.llm_plots import make_llm_figures, read_llm_metrics  # noqa: E402

pytestmark = pytest.mark.llm


def _write(dirpath, method, seed, accs):
    dirpath.mkdir(parents=True)
    with open(dirpath / "metrics.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=METRICS_COLUMNS)
        w.writeheader()
        for lab, acc in [*enumerate(accs), ("all", sum(accs) / len(accs))]:
            w.writerow({"method": method, "model": "m", "labeler": lab, "n_eval": 10,
                        "accuracy": acc, "ties": 0, "seed": seed, "epochs": 1, "lora_r": 4,
                        "lora_alpha": 8, "targets": "query+key"})


def test_figures_from_several_method_dirs(tmp_path):
    _write(tmp_path / "res" / "shared-s0", "shared", 0, [0.7, 0.6, 0.8])
    _write(tmp_path / "res" / "shared-s1", "shared", 1, [0.6, 0.6, 0.7])
    _write(tmp_path / "res" / "shared-a-s0", "shared-a", 0, [0.5, 0.6, 0.6])
    _write(tmp_path / "global", "global", 0, [0.55, 0.55, 0.6])
    rows = read_llm_metrics([tmp_path / "res", tmp_path / "global"])
    assert len(rows) == 16
    paths = make_llm_figures([tmp_path / "res", tmp_path / "global"], tmp_path / "fig")
    names = sorted(p.name for p in paths)
    assert names == sorted(f"llm_fig{i}.{ext}" for i in ("1_mean_accuracy", "2_per_labeler",
                                                          "3_share_a_vs_b")
                           for ext in ("png", "pdf"))
    assert all(p.stat().st_size > 0 for p in paths)


def test_no_metrics_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no llm metrics.csv"):
        make_llm_figures([tmp_path], tmp_path / "fig")
