"""README's generated "Results" tables, rendered from docs/results/ only (the files
`python -m figures.results` collects). README holds each between ``<!-- results:NAME -->`` and
``<!-- /results:NAME -->``; tests/test_results.py checks README equals these renderings, so new
methods or slopes.csv columns appear without editing this file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

#: Sweeps in the order of README's slopes table (the rest follow alphabetically).
SWEEP_ORDER = ("nu", "Np", "N", "tail", "k", "d1", "Np_new")
VARY_LABEL = {"nu": "ν", "Np": "N_p", "N": "N", "tail": "Σ_tail", "k": "k", "d1": "d1",
              "Np_new": "N_p,new"}
KNOWN = ["quantity", "vary", "predicted_slope", "measured_slope", "ci_low", "ci_high", "n_points",
         "verdict", "constant_free", "pred_low", "pred_high", "method", "bound"]


def _fmt(v, nd=2) -> str:
    if isinstance(v, str):
        return v
    if pd.isna(v):
        return "–"
    s = f"{v:.{nd}f}".replace("-", "−")
    return "0.00" if s == "−0.00" else s


def _vary_label(spec: dict, reference: dict) -> str:
    """The varied parameter, with the base fields that differ from ``reference`` (the ν sweep's
    base: the main job's instance)."""
    changed = [f"{VARY_LABEL.get(k, k)}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}"
               for k, v in spec["base"].items() if k != spec["vary"] and reference.get(k) != v]
    label = VARY_LABEL.get(spec["vary"], spec["vary"])
    return f"{label} ({', '.join(changed)})" if changed else label


def slopes_block(docs: Path) -> str:
    """The slopes table of every docs/results/<sweep>/slopes.csv (default sweeps first)."""
    names = [n for n in SWEEP_ORDER if (docs / n / "slopes.csv").exists()]
    names += sorted(p.parent.name for p in docs.glob("*/slopes.csv") if p.parent.name not in names)
    specs = {n: json.loads((docs / n / "sweep.json").read_text()) for n in names}
    reference = specs.get("nu", specs[names[0]])["base"]
    frames = []
    for n in names:
        df = pd.read_csv(docs / n / "slopes.csv")
        df.insert(0, "vary_label", _vary_label(specs[n], reference))
        frames.append(df)
    table = pd.concat(frames, ignore_index=True)
    extra = [c for c in table.columns if c not in KNOWN and c != "vary_label"]
    head = ["vary", "quantity", "method", "bound", "predicted", "measured", "95% CI", "verdict", *extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.itertuples(index=False):
        r = r._asdict()
        free = str(r["constant_free"]).lower() == "true"
        pred = _fmt(r["predicted_slope"]) + ("" if free else
                                             f" ({_fmt(r['pred_low'])} … {_fmt(r['pred_high'])})")
        cells = [r["vary_label"], r["quantity"], r["method"], r["bound"], pred, _fmt(r["measured_slope"]),
                 f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]", r["verdict"] + ("" if free else " †"),
                 *[_fmt(r[c], 3) for c in extra]]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def tail_block(docs: Path) -> str:
    df = pd.read_csv(docs / "tail-study" / "tail_study.csv")
    rows = df[df["check"].str.endswith("half slope") | df["check"].str.startswith("free exponent")]
    lines = ["| check | N_p | Σ_tail range | estimate | 95% CI | CI above ¼ (inside cap) | CI above ½ (outside cap) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows.itertuples():
        np_ = "all" if r.Np == 0 else f"{int(r.Np)}"
        lines.append(f"| {r.check} | {np_} | {r.tail_low:g}–{r.tail_high:g} | {_fmt(r.estimate)} | "
                     f"[{_fmt(r.ci_low)}, {_fmt(r.ci_high)}] | {'yes' if r.above_inside_cap else 'no'} | "
                     f"{'yes' if r.above_outside_cap else 'no'} |")
    fits = df[df["check"].str.contains("form fitted")]
    lines += ["", "| Σ_tail range | constants fitted on | form | RMSE of log dist in sample | predicting N_p | RMSE there |",
              "|---|---|---|---|---|---|"]
    for r in fits.itertuples():
        lines.append(f"| {r.range.replace('<=', '≤')} | N_p = {int(r.Np)} | {r.check.split()[0]} | "
                     f"{r.rmse_in_sample:.3f} | {_nps(r.predicted)} | {r.estimate:.3f} |")
    return "\n".join(lines)


def _nps(v) -> str:
    """'800,6400' or 6400.0 (pandas reads a single value as a number) -> '800, 6400'."""
    return ", ".join(f"{float(x):g}" for x in str(v).split(","))


def remark3_block(docs: Path) -> str:
    return (docs / "remark3" / "remark3.md").read_text().strip()


def levels_block(docs: Path) -> str:
    """Seed-median est_err and pred_err of every method at each N_p of the N_p sweep, so that
    each method is seen between `zero` (learned nothing) and `oracle` (knew B⋄)."""
    runs = pd.read_csv(docs / "Np" / "runs.csv.gz")
    med = runs.groupby(["method", "value"])[["est_err", "pred_err"]].median()
    order = [m for m in ("oracle", "shared", "zero", "global", "local", "full", "nuclear")
             if m in set(runs["method"])]
    values = sorted(runs["value"].unique())
    lines = ["| method | " + " | ".join(f"N_p = {v:g}" for v in values) + " |",
             "|---|" + "---|" * len(values)]
    for m in order:
        cells = [f"{med.loc[(m, v), 'est_err']:.3f} / {med.loc[(m, v), 'pred_err']:.3f}"
                 for v in values]
        lines.append(f"| `{m}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def llm_new_users_block(docs: Path) -> str:
    """The new-labeler table (llm.study --new-users writes it) from docs/results/llm-new-users."""
    return (docs / "llm-new-users" / "new_users_summary.md").read_text().strip()


def _ci(v, lo, hi, nd=3) -> str:
    return f"{_fmt(v, nd)} [{_fmt(lo, nd)}, {_fmt(hi, nd)}]"


def new_users_block(docs: Path) -> str:
    """Held-out users (`--vary Np_new`): est_err_new seed medians per method, the paired
    differences scratch − shared with 95% CIs, and the crossover n_new against the theory."""
    comp = pd.read_csv(docs / "Np_new" / "comparison.csv")
    meds = [c for c in comp.columns if c.startswith("median ")]
    diffs = [m for m in ("local", "full") if f"{m} − shared" in comp]
    head = ["N_p,new", *[f"`{c[7:]}`" for c in meds], *[f"{m} − shared (95% CI)" for m in diffs]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in comp.to_dict("records"):
        cells = [f"{r['Np_new']:g}", *[_fmt(r[c], 3) for c in meds],
                 *[_ci(r[f"{m} − shared"], r[f"{m} − shared low"], r[f"{m} − shared high"])
                   for m in diffs]]
        lines.append("| " + " | ".join(cells) + " |")
    cross = pd.read_csv(docs / "Np_new" / "crossover.csv")
    lines += ["", "| from scratch | crossover n_new measured (95% CI) | theory, constants 1 | "
              "crossing of the fitted a/n + f curves | predicted floor of `shared` | fitted floor |",
              "|---|---|---|---|---|---|"]
    for r in cross.to_dict("records"):
        meas = (f"> {r['grid_max']:g} (not on the grid)" if not pd.notna(r["crossover_measured"])
                or r["crossover_measured"] == float("inf") else
                f"{r['crossover_measured']:.0f} [{r['ci_low']:.0f}, {r['ci_high']:.0f}]")
        lines.append(f"| `{r['method']}` | {meas} | {r['crossover_theory_c1']:.0f} | "
                     f"{r['crossover_fitted_curves']:.0f} | {r['floor_predicted']:.4f} | "
                     f"{r['floor_fitted']:.4f} |")
    return "\n".join(lines)


BLOCKS = {"slopes": slopes_block, "levels": levels_block, "tail-study": tail_block,
          "remark3": remark3_block, "new-users": new_users_block,
          "llm-new-users": llm_new_users_block}


def render_blocks(docs: Path) -> dict[str, str]:
    return {k: f(docs) for k, f in BLOCKS.items()
            if k == "slopes" or (docs / {"levels": "Np", "new-users": "Np_new"}.get(k, k)).exists()}


def readme_blocks(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2).strip() for m in
            re.finditer(r"<!-- results:([\w-]+) -->\n(.*?)<!-- /results:\1 -->", text, flags=re.S)}


def write_readme(readme: Path, docs: Path) -> None:
    text = readme.read_text()
    for key, body in render_blocks(docs).items():
        pat = re.compile(rf"(<!-- results:{re.escape(key)} -->\n).*?(<!-- /results:{re.escape(key)} -->)", re.S)
        if not pat.search(text):
            raise KeyError(f"README has no <!-- results:{key} --> block")
        text = pat.sub(lambda m, b=body: m.group(1) + b.strip() + "\n" + m.group(2), text)
    readme.write_text(text)
