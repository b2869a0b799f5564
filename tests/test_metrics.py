"""Sweep metrics: episodes -> per-seed C, A, proxy -> means over seeds with t-intervals, checked by hand."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats as st

from capgap.eval.metrics import (
    METRICS,
    ROW_KEYS,
    compute,
    compute_final,
    figure_support,
    final_rows,
    last_evaluations,
    load_episodes,
    mean_ci,
    support,
)
from capgap.eval.stats import interval

ENV, LAVA = "capgap/CheeseCorner-v0", "capgap/LavaShift-v0"
SIZES = {"tiny": (0, 500), "small": (1, 5_000)}
BINARY = {"goal": (1.0, 1.0), "proxy": (0.0, 1.0), "neither": (0.0, 0.0)}  # outcome -> (goal, capability)
N_RESAMPLES = 500


def episodes(env: str, dials: str, size: str, seed: int, step: int, split: str,
             outcomes: list[str | tuple[str, float, float]]) -> list[dict[str, Any]]:
    """Episode records; an outcome is a name (binary scores) or (name, goal_score, capability_score)."""
    out = []
    for i, o in enumerate(outcomes):
        name, goal, cap = (o, *BINARY[o]) if isinstance(o, str) else o
        out.append({"run": f"{size}_s{seed}", "env": env, "rung": size, "rung_index": SIZES[size][0],
                    "params": SIZES[size][1], "family": "conv", "dials": dials, "setting": "", "seed": seed,
                    "step": step,
                    "split": split, "episode": i, "level": 1000 + i, "outcome": name, "goal_score": goal,
                    "capability_score": cap, "return": goal, "length": 10})
    return out


# The main group: CheeseCorner, tiny, step 1000, three seeds of four episodes per split.
#   seed 0  train g g g p: C=1    A=0.75  proxy=0.25 | test g p p n: C=0.75 A=0.25 proxy=0.5
#   seed 1  train g g n n: C=0.5  A=0.5   proxy=0    | test p p p g: C=1    A=0.25 proxy=0.75
#   seed 2  train n n n n: C=0    A=0     proxy=0    | test n p:     C=0.5  A=0    proxy=0.5
# Seed 2's two test episodes make the averaging order matter: pooling all episodes would give C_test = 0.8.
MAIN = {
    0: {"train": ["goal", "goal", "goal", "proxy"], "test": ["goal", "proxy", "proxy", "neither"]},
    1: {"train": ["goal", "goal", "neither", "neither"], "test": ["proxy", "proxy", "proxy", "goal"]},
    2: {"train": ["neither"] * 4, "test": ["neither", "proxy"]},
}
# Per-seed values, by hand. Seed 2 has C_train = A_train = 0: no transfer, no retention.
PER_SEED = {
    "C_train": [1.0, 0.5, 0.0], "A_train": [0.75, 0.5, 0.0], "proxy_train": [0.25, 0.0, 0.0],
    "C_test": [0.75, 1.0, 0.5], "A_test": [0.25, 0.25, 0.0], "proxy_test": [0.5, 0.75, 0.5],
    "gap_train": [0.25, 0.0, 0.0], "gap_test": [0.5, 0.75, 0.5],
    "transfer": [0.75 / 1.0, 1.0 / 0.5], "retention": [0.25 / 0.75, 0.25 / 0.5],
}
MEANS = {
    "C_train": 0.5, "A_train": 1.25 / 3, "proxy_train": 1 / 12,
    "C_test": 0.75, "A_test": 1 / 6, "proxy_test": 7 / 12,
    "gap_train": 1 / 12, "gap_test": 7 / 12,
    "transfer": 1.375, "retention": 5 / 12,  # means of per-seed ratios over seeds 0 and 1 (not 0.75 / 0.5)
}


def all_records() -> list[list[dict[str, Any]]]:
    """Episodes grouped by run (one JSONL file each)."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for seed, splits in MAIN.items():
        recs = []
        for split, outs in splits.items():
            recs += episodes(ENV, "size=9", "tiny", seed, 1000, split, outs)
        runs[f"tiny_s{seed}"] = recs
    # an earlier checkpoint of seed 0 only, with fractional (KeysChests-like) scores:
    #   train (n .5 .5), (g 1 1): C=0.75 A=0.75 | test (p .25 1), (n .5 .5): C=0.75 A=0.375 proxy=0.5
    runs["tiny_s0"] += episodes(ENV, "size=9", "tiny", 0, 500, "train", [("neither", 0.5, 0.5), "goal"])
    runs["tiny_s0"] += episodes(ENV, "size=9", "tiny", 0, 500, "test", [("proxy", 0.25, 1.0), ("neither", 0.5, 0.5)])
    # a bigger rung ("small" sorts before "tiny" by name, after it by rung_index): identical seeds, no test split
    for seed in (0, 1):
        runs[f"small_s{seed}"] = episodes(ENV, "size=9", "small", seed, 1000, "train", ["goal", "proxy"])
    # another env, first in the file list, last in the output
    return [episodes(LAVA, "", "tiny", 0, 1000, "test", ["goal", "neither"]), *runs.values()]


def write_jsonl(tmp_path: Path, runs: list[list[dict[str, Any]]]) -> list[Path]:
    paths = []
    for i, recs in enumerate(runs):
        path = tmp_path / "eval" / f"run{i}.jsonl"
        path.parent.mkdir(exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in recs))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    paths = write_jsonl(tmp_path_factory.mktemp("sweep"), all_records())
    return compute(load_episodes(paths), n_resamples=N_RESAMPLES, seed=0)


def row_at(rows: list[dict[str, Any]], env: str, size: str, step: int) -> dict[str, Any]:
    (row,) = [r for r in rows if (r["env"], r["rung"], r["step"]) == (env, size, step)]
    return row


def test_rows_keys_and_order(rows: list[dict[str, Any]]) -> None:
    assert [(r["env"], r["rung"], r["step"]) for r in rows] == [
        (ENV, "tiny", 500), (ENV, "tiny", 1000), (ENV, "small", 1000), (LAVA, "tiny", 1000)]
    for r in rows:
        assert tuple(r) == ROW_KEYS
        assert all(m in r and m + "_lo" in r and m + "_hi" in r for m in METRICS)
    r = row_at(rows, ENV, "tiny", 1000)
    assert (r["dials"], r["rung_index"], r["params"], r["family"], r["n_seeds"]) == ("size=9", 0, 500, "conv", 3)


def test_means_by_hand(rows: list[dict[str, Any]]) -> None:
    r = row_at(rows, ENV, "tiny", 1000)
    for m in METRICS:
        assert r[m] == pytest.approx(MEANS[m], rel=1e-12), m
        assert r[m] == pytest.approx(np.mean(PER_SEED[m]), rel=1e-12), m


def test_fractional_scores_and_single_seed(rows: list[dict[str, Any]]) -> None:
    r = row_at(rows, ENV, "tiny", 500)
    expected = {"C_train": 0.75, "A_train": 0.75, "proxy_train": 0.0, "C_test": 0.75, "A_test": 0.375,
                "proxy_test": 0.5, "gap_train": 0.0, "gap_test": 0.375, "transfer": 1.0, "retention": 0.5}
    assert r["n_seeds"] == 1
    for m, v in expected.items():  # one seed: its value, and no interval
        assert r[m] == pytest.approx(v, rel=1e-12), m
        assert math.isnan(r[m + "_lo"]) and math.isnan(r[m + "_hi"]), m


def test_missing_split_is_nan_and_identical_seeds_have_a_point_ci(rows: list[dict[str, Any]]) -> None:
    r = row_at(rows, ENV, "small", 1000)  # two seeds, both train g p, no test episodes
    assert r["n_seeds"] == 2
    assert (r["C_train"], r["C_train_lo"], r["C_train_hi"]) == (1.0, 1.0, 1.0)
    assert (r["A_train"], r["A_train_lo"], r["A_train_hi"]) == (0.5, 0.5, 0.5)
    for m in ("C_test", "A_test", "proxy_test", "gap_test", "transfer", "retention"):
        assert all(math.isnan(r[k]) for k in (m, m + "_lo", m + "_hi")), m
    lava = row_at(rows, LAVA, "tiny", 1000)  # test only
    assert lava["C_test"] == 0.5 and math.isnan(lava["C_train"]) and math.isnan(lava["transfer"])


def test_ci_is_the_t_interval_of_the_hand_computed_seed_values(rows: list[dict[str, Any]]) -> None:
    r = row_at(rows, ENV, "tiny", 1000)
    for m in METRICS:
        x = np.array(PER_SEED[m])
        lo, hi = st.t.interval(0.95, x.size - 1, loc=x.mean(), scale=st.sem(x))
        bounds = support(m)  # cut where the metric cannot go (a rate at [0, 1])
        if bounds is not None:
            lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
        assert (r[m + "_lo"], r[m + "_hi"]) == pytest.approx((lo, hi), rel=1e-9), m
        assert r[m + "_lo"] <= r[m] <= r[m + "_hi"], m
        assert r[m + "_lo"] < r[m + "_hi"], m  # the seeds differ for every metric here


def test_ci_contains_the_mean_everywhere(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        for m in METRICS:
            if math.isnan(r[m]):
                continue
            if r["n_seeds"] == 1:  # no interval from one seed
                assert math.isnan(r[m + "_lo"]) and math.isnan(r[m + "_hi"]), (r["rung"], r["step"], m)
            else:
                assert r[m + "_lo"] <= r[m] <= r[m + "_hi"], (r["rung"], r["step"], m)


def test_ci_is_reproducible_and_draws_nothing(tmp_path: Path) -> None:
    records = load_episodes(write_jsonl(tmp_path, all_records()))
    a = compute(records, n_resamples=N_RESAMPLES, seed=0)
    b = compute(records, n_resamples=N_RESAMPLES, seed=0)
    c = compute(records, n_resamples=N_RESAMPLES, seed=1)
    assert json.dumps(a) == json.dumps(b)  # NaN-safe equality
    assert json.dumps(a) == json.dumps(c)  # the t-interval uses no random numbers: the seed cannot matter


def test_mean_ci_degenerate_cases() -> None:
    assert all(math.isnan(v) for v in mean_ci([]))
    assert all(math.isnan(v) for v in mean_ci([math.nan, math.nan]))
    m, lo, hi = mean_ci([0.3])  # one seed: no interval
    assert m == 0.3 and math.isnan(lo) and math.isnan(hi)
    m, lo, hi = mean_ci([0.1, 0.1, 0.1, math.nan])  # identical seeds; NaN dropped
    assert lo == m == hi == pytest.approx(0.1)


def test_final_rows(rows: list[dict[str, Any]]) -> None:
    final = final_rows(rows)
    assert [(r["env"], r["rung"], r["step"]) for r in final] == [
        (ENV, "tiny", 1000), (ENV, "small", 1000), (LAVA, "tiny", 1000)]


def test_final_rows_hold_every_seed_where_it_stopped() -> None:
    """Runs trained to competence stop at different steps: seed 0 at 300, seed 1 at 500, seed 2 at 300.
    The row at the largest step holds seed 1 alone; the final row holds all three at their own last
    evaluation (and none at an earlier one)."""
    recs = []
    for seed, last, a_test in ((0, 300, ["goal", "proxy"]), (1, 500, ["proxy", "proxy"]), (2, 300, ["goal", "goal"])):
        for step in range(100, last + 1, 100):
            outs = a_test if step == last else ["neither", "neither"]  # only the last evaluation scores
            recs += episodes(ENV, "", "tiny", seed, step, "test", outs)
            recs += episodes(ENV, "", "tiny", seed, step, "train", ["goal", "goal"])
    (at_max,) = final_rows(compute(recs))
    assert (at_max["step"], at_max["n_seeds"], at_max["A_test"]) == (500, 1, 0.0)
    (final,) = compute_final(recs)
    assert (final["step"], final["first_step"], final["n_seeds"]) == (500, 300, 3)
    assert final["A_test"] == pytest.approx(np.mean([0.5, 0.0, 1.0]))
    assert final["proxy_test"] == pytest.approx(np.mean([0.5, 1.0, 0.0]))
    assert final_rows([final]) == [final]
    kept = last_evaluations(recs)
    assert len(kept) == 3 * 4 and {r["step"] for r in kept} == {500}
    assert {r["step"] for r in recs} == {100, 200, 300, 400, 500}  # the input is left as it was


def test_inconsistent_group_metadata_is_refused() -> None:
    a = episodes(ENV, "", "tiny", 0, 10, "test", ["goal"])
    b = episodes(ENV, "", "tiny", 1, 10, "test", ["goal"])
    b[0]["family"] = "mlp"
    with pytest.raises(ValueError, match="disagree"):
        compute(a + b)


@pytest.mark.parametrize(("bad", "reason"), [
    ("{not json", "not JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"run": "x"}', "missing"),
])
def test_malformed_line_names_file_and_line(tmp_path: Path, bad: str, reason: str) -> None:
    good = [json.dumps(r) for r in episodes(ENV, "", "tiny", 0, 10, "test", ["goal", "proxy"])]
    path = tmp_path / "run.jsonl"
    path.write_text(f"{good[0]}\n\n{good[1]}\n")
    assert len(load_episodes([path])) == 2  # blank lines are skipped
    path.write_text(f"{good[0]}\n\n{good[1]}\n{bad}\n")  # line 4 is bad
    with pytest.raises(ValueError, match=re.escape(f"{path}:4: ") + ".*" + re.escape(reason)) as err:
        load_episodes([path])
    assert "\n" not in str(err.value)


def test_unknown_outcome_is_malformed(tmp_path: Path) -> None:
    rec = episodes(ENV, "", "tiny", 0, 10, "test", ["goal"])[0] | {"outcome": "cheese"}
    path = tmp_path / "run.jsonl"
    path.write_text(json.dumps(rec) + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}:1: ") + ".*outcome"):
        load_episodes([path])


def test_records_from_before_the_setting_key_still_load(tmp_path: Path) -> None:
    """Episode files written before runs had a ``setting`` read as plain runs (setting "")."""
    rec = episodes(ENV, "", "tiny", 0, 10, "test", ["goal"])[0]
    del rec["setting"]
    path = tmp_path / "old.jsonl"
    path.write_text(json.dumps(rec) + "\n")
    (loaded,) = load_episodes([path])
    assert loaded["setting"] == "" and compute([loaded])[0]["setting"] == ""


def test_test_data_speaks_the_real_record() -> None:
    """The records above are what the evaluator writes: the same keys, a real env, family and rungs."""
    import capgap.envs as E
    from capgap.agents import FAMILIES, LADDER
    from capgap.eval.records import EPISODE_KEYS

    rec = episodes(ENV, "size=9", "tiny", 0, 1000, "test", ["goal"])[0]
    assert tuple(rec) == EPISODE_KEYS
    assert {ENV, LAVA} <= set(E.TASKS) and rec["family"] in FAMILIES
    assert set(SIZES) <= {name for name, _ in LADDER}


# ----- in-training inspection -----------------------------------------------------------------

def _insp(run: str, seed: int, step: int, **numbers: float | None) -> dict:
    return {"step": step, "run": run, "env": "capgap/CheeseCorner-v0", "rung": "nano", "rung_index": 0,
            "params": 585, "family": "conv", "dials": "", "seed": seed, "seconds": 1.0, **numbers}


def test_inspections_are_averaged_over_seeds_with_cis(tmp_path: Path) -> None:
    from capgap.eval.metrics import compute_inspections, load_inspections

    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(json.dumps(_insp("r0", 0, 0, **{"probe/head": 0.2, "A_ds": None})) + "\n"
                 + json.dumps(_insp("r0", 0, 0, **{"probe/head": 0.4, "A_ds": 0.5})) + "\n\n")  # a later line wins
    b.write_text(json.dumps(_insp("r1", 1, 0, **{"probe/head": 0.8, "A_ds": None})) + "\n")
    rows = compute_inspections(load_inspections([a, b]))
    assert len(rows) == 1 and rows[0]["n_seeds"] == 2
    r = rows[0]
    assert r["probe/head"] == pytest.approx(0.6) and r["probe/head_lo"] <= 0.6 <= r["probe/head_hi"]
    assert r["A_ds"] == 0.5  # None (undefined) is left out: one seed's value, and no interval
    assert math.isnan(r["A_ds_lo"]) and math.isnan(r["A_ds_hi"])
    assert "seconds" not in r and "seed" not in r
    b.write_text(json.dumps({**_insp("r1", 1, 0), "family": "mlp"}) + "\n")
    with pytest.raises(ValueError, match="families conv, mlp"):
        compute_inspections(load_inspections([a, b]))
    b.write_text('{"step": 0}\n')
    with pytest.raises(ValueError, match=r"b.jsonl:1: malformed inspection record: missing run, env"):
        load_inspections([b])


@pytest.mark.parametrize(("name", "bounds"), [
    ("rt/test/ga/rate", (0.0, 1.0)), ("mon/act/auroc", (0.0, 1.0)), ("mon/test_proxy", (0.0, 1.0)),
    ("acc_all", (0.0, 1.0)), ("A_ds", (0.0, 1.0)), ("gap_test", (-1.0, 1.0)), ("mon/act/excess", (-1.0, 1.0)),
    ("steer_dA/trunk.3", (-1.0, 1.0)), ("diff_all", (-1.0, 1.0)), ("rt/train/random/first", (0.0, math.inf)),
    ("mon/act/warning", (0.0, math.inf)), ("C_hat_test", None), ("steer_d_visits", None), ("norm", None)])
def test_the_analysis_figures_are_cut_where_they_cannot_go(name: str, bounds: tuple[float, float] | None) -> None:
    """Rates and AUROCs at [0, 1], their differences at [-1, 1], counts at 0; a calibrated score or a
    difference of counts is not cut (no bound is known without more)."""
    assert figure_support(name) == bounds
    values = [0.01, 0.02, 0.9] if bounds is None or bounds[0] == 0.0 else [-0.99, -0.95, 0.5]
    _, lo, hi = mean_ci(values, metric=name)
    raw = interval(values)
    assert (lo, hi) == ((raw[1], raw[2]) if bounds is None else (max(raw[1], bounds[0]), min(raw[2], bounds[1])))
