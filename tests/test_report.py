"""The sweep report: markdown, CSV/JSON, PNG plots and a TensorBoard log that reads back."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hp_metadata

from capgap.eval.metrics import ROW_KEYS, compute
from capgap.eval.report import run_dirname, table_text, write_report

ENV, LAVA = "capgap/CheeseCorner-v0", "capgap/LavaShift-v0"
SIZES = {"tiny": (0, 500), "small": (1, 5_000)}
SCORES = {"goal": (1.0, 1.0), "proxy": (0.0, 1.0), "neither": (0.0, 0.0)}  # outcome -> (goal, capability)
G, P, N = "goal", "proxy", "neither"

# (env, dials, size, step) -> seed -> split -> outcomes
SPEC: dict[tuple[str, str, str, int], dict[int, dict[str, list[str]]]] = {
    # seed 0 test: C=0.25 A=0.25, seed 1 test: C=0.5 A=0  ->  C_test = 0.375, A_test = 0.125
    (ENV, "size=9", "tiny", 100): {0: {"train": [G, G, N, N], "test": [G, N, N, N]},
                                   1: {"train": [G, G, N, N], "test": [P, P, N, N]}},
    # identical seeds: C_test = 1, A_test = 0.75, gap 0.25, C_train = A_train = 1, all CIs points
    (ENV, "size=9", "tiny", 200): {s: {"train": [G] * 4, "test": [G, G, G, P]} for s in (0, 1)},
    (ENV, "size=9", "small", 100): {0: {"train": [G] * 4, "test": [G, G, P, P]},
                                    1: {"train": [G] * 4, "test": [G, P, P, P]}},
    (ENV, "size=9", "small", 200): {0: {"train": [G] * 4, "test": [G, G, G, P]},
                                    1: {"train": [G] * 4, "test": [G, G, P, P]}},
    # no test split at all: test metrics are n/a
    (LAVA, "", "tiny", 200): {s: {"train": [G, N]} for s in (0, 1)},
}
# rows straight from compute: the chance columns (calibrated scores, baselines) are not filled in
TINY_ROW = ("| tiny | 500 | 200 | 2 | n/a | n/a | n/a | 1.00 [1.00, 1.00] | 0.75 [0.75, 0.75] | 0.25 [0.25, 0.25] | "
            "1.00 [1.00, 1.00] | 1.00 [1.00, 1.00] | 1.00 [1.00, 1.00] | 0.75 [0.75, 0.75] | 0.25 [0.25, 0.25] | "
            "n/a / n/a / n/a / n/a | n/a / n/a / n/a / n/a |  |")
# train A 0.5 < metrics.LEARNED: the row is flagged, whatever its test numbers
LAVA_ROW = ("| tiny | 500 | 200 | 2 | n/a | n/a | n/a | n/a | n/a | n/a | 0.50 [0.50, 0.50] | 0.50 [0.50, 0.50] "
            "| n/a | n/a | n/a | n/a / n/a / n/a / n/a | n/a / n/a / n/a / n/a | not learned |")
RUNS = {run_dirname(ENV, "size=9", "tiny"), run_dirname(ENV, "size=9", "small"), run_dirname(LAVA, "", "tiny")}
PLOTS = ("ca_vs_params", "curves", "gap_vs_size")


def records() -> list[dict[str, Any]]:
    out = []
    for (env, dials, size, step), seeds in SPEC.items():
        for seed, splits in seeds.items():
            for split, outcomes in splits.items():
                for i, o in enumerate(outcomes):
                    goal, cap = SCORES[o]
                    out.append({"run": f"{size}_s{seed}", "env": env, "rung": size, "rung_index": SIZES[size][0],
                                "params": SIZES[size][1], "family": "conv", "dials": dials, "seed": seed,
                                "step": step, "split": split, "episode": i, "level": i, "outcome": o,
                                "goal_score": goal, "capability_score": cap, "return": goal, "length": 5})
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], dict[str, Path], Path]:
    rows = compute(records(), n_resamples=200, seed=0)
    out = tmp_path_factory.mktemp("report")
    return rows, write_report(rows, out, title="test sweep"), out


def test_files_exist(report: tuple) -> None:
    _, paths, out = report
    assert set(paths) == {"md", "csv", "json", *PLOTS, "tensorboard"}
    assert all(p.exists() and p.parent == out for p in paths.values())
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["report.md", "report.csv", "report.json", "tensorboard", *(f"{p}.png" for p in PLOTS)])


def test_markdown_tables(report: tuple) -> None:
    rows, paths, _ = report
    md = paths["md"].read_text()
    assert md.startswith("# test sweep\n")
    assert f"## {ENV}" in md and f"## {LAVA}" in md and "dials: `size=9`" in md
    assert "| rung | params | step | seeds | C_hat_test | A_hat_test | proxy_hat_test | C_test | A_test | gap_test | " \
           "C_train | A_train | transfer | retention | proxy_test | random | untrained | flag |" in md
    assert TINY_ROW in md  # final step only: no row at step 100
    assert LAVA_ROW in md
    assert "| tiny | 500 | 100 |" not in md
    assert md.count("`ca_vs_params.png`") == 2  # below each of the two tables
    small = next(r for r in rows if r["rung"] == "small" and r["step"] == 200)
    assert small["C_test"] == 1.0 and small["A_test"] == pytest.approx(0.625)
    assert f"0.62 [{small['A_test_lo']:.2f}, {small['A_test_hi']:.2f}]" in md


def test_csv_and_json_hold_every_row(report: tuple) -> None:
    rows, paths, _ = report
    with paths["csv"].open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == ROW_KEYS
        lines = list(reader)
    assert len(lines) == len(rows) == len(SPEC)
    tiny100 = next(r for r in lines if r["rung"] == "tiny" and r["step"] == "100")
    assert float(tiny100["C_test"]) == 0.375 and float(tiny100["A_test"]) == 0.125
    data = json.loads(paths["json"].read_text())
    assert len(data) == len(rows) and all(tuple(d) == ROW_KEYS for d in data)
    lava = next(d for d in data if d["env"] == LAVA)
    assert lava["C_test"] is None and lava["C_train"] == 0.5  # NaN is null


def test_pngs_are_valid(report: tuple) -> None:
    _, paths, _ = report
    for name in PLOTS:
        data = paths[name].read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        assert len(data) > 10_000, (name, len(data))


def test_tensorboard_top_level(report: tuple) -> None:
    _, paths, _ = report
    ea = EventAccumulator(str(paths["tensorboard"]))
    ea.Reload()
    assert {f"plots/{p}" for p in PLOTS} <= set(ea.Tags()["images"])
    img = ea.Images("plots/curves")[0]
    assert img.width > 200 and img.height > 200
    text = ea.Tensors("report/text_summary")[0].tensor_proto.string_val[0].decode()
    assert text.startswith("# test sweep") and TINY_ROW in text


def test_tensorboard_runs(report: tuple) -> None:
    rows, paths, _ = report
    tb = paths["tensorboard"]
    assert {p.name for p in tb.iterdir() if p.is_dir()} == RUNS  # no stray add_hparams sub-runs
    for run in RUNS:
        assert not any(p.is_dir() for p in (tb / run).iterdir()), run
    for (env, dials, size) in ((ENV, "size=9", "tiny"), (ENV, "size=9", "small"), (LAVA, "", "tiny")):
        ea = EventAccumulator(str(tb / run_dirname(env, dials, size)))
        ea.Reload()
        content = ea.PluginTagToContent("hparams")
        assert {hp_metadata.EXPERIMENT_TAG, hp_metadata.SESSION_START_INFO_TAG} <= set(content)
        start = hp_metadata.parse_session_start_info_plugin_data(content[hp_metadata.SESSION_START_INFO_TAG])
        assert start.hparams["rung"].string_value == size and start.hparams["dials"].string_value == dials
        assert start.hparams["params"].number_value == SIZES[size][1]
        mine = sorted((r for r in rows if (r["env"], r["dials"], r["rung"]) == (env, dials, size)),
                      key=lambda r: r["step"])
        for m in ("C_test", "A_test", "gap_test"):
            events = ea.Scalars(f"sweep/{m}")
            assert [e.step for e in events] == [r["step"] for r in mine]
            assert [e.value for e in events] == pytest.approx([r[m] for r in mine], rel=1e-6, nan_ok=True)
            (final,) = ea.Scalars(f"final/{m}")
            assert final.step == mine[-1]["step"]
            assert final.value == pytest.approx(mine[-1][m], rel=1e-6, nan_ok=True)


def test_tensorboard_curves_by_hand(report: tuple) -> None:
    _, paths, _ = report
    ea = EventAccumulator(str(paths["tensorboard"] / run_dirname(ENV, "size=9", "tiny")))
    ea.Reload()
    assert [(e.step, e.value) for e in ea.Scalars("sweep/C_test")] == [(100, 0.375), (200, 1.0)]
    assert [(e.step, e.value) for e in ea.Scalars("sweep/A_test")] == [(100, 0.125), (200, 0.75)]


def test_rewrite_replaces_the_log(report: tuple, tmp_path: Path) -> None:
    rows, _, _ = report
    write_report(rows, tmp_path)
    paths = write_report(rows, tmp_path)
    ea = EventAccumulator(str(paths["tensorboard"] / run_dirname(ENV, "size=9", "tiny")))
    ea.Reload()
    assert len(ea.Scalars("sweep/C_test")) == 2


def test_table_text(report: tuple) -> None:
    rows, _, _ = report
    text = table_text(rows)
    assert f"{ENV}  [size=9]" in text and f"{LAVA}  [default dials]" in text
    tiny = next(line for line in text.splitlines() if line.split()[:1] == ["tiny"] and "1.00 [1.00, 1.00]" in line)
    assert tiny.split() == ["tiny", "500", "2", "1.00", "[1.00,", "1.00]", "1.00", "[1.00,", "1.00]",
                            "0.75", "[0.75,", "0.75]", "0.25", "[0.25,", "0.25]", "n/a", "n/a", "n/a",
                            "n/a", "/", "n/a", "/", "n/a", "/", "n/a"]
    lava = next(line for line in text.splitlines() if line.split()[:1] == ["tiny"] and "not learned" in line)
    assert lava.split()[:6] == ["tiny", "500", "2", "0.50", "[0.50,", "0.50]"] and lava.endswith("not learned")


def test_one_seed_prints_no_ci() -> None:
    one = [r for r in records() if r["seed"] == 0]
    rows = compute(one, n_resamples=200, seed=0)
    text = table_text(rows)
    tiny = next(line for line in text.splitlines() if line.split()[:1] == ["tiny"] and "1 seed" in line)
    assert "[" not in tiny and tiny.split()[:5] == ["tiny", "500", "1", "1.00", "(1"], tiny


def test_empty_rows_still_write(tmp_path: Path) -> None:
    paths = write_report([], tmp_path)
    assert paths["md"].read_text().startswith("# capgap sweep")
    assert paths["curves"].read_bytes()[:4] == b"\x89PNG"


def test_chance_beside_every_row(tmp_path: Path) -> None:
    """Annotated rows (capgap report's) carry the calibrated scores and both chance baselines, in the
    table, the terminal text and TensorBoard."""
    from capgap.eval import chance

    rows = chance.annotate([r for r in compute(records(), n_resamples=200, seed=0) if r["env"] == ENV])
    refs = chance.references(ENV, "size=9")
    tiny = next(r for r in rows if r["rung"] == "tiny" and r["step"] == 200)
    a_hat = chance.normalise(0.75, refs.score("random", "test")["A"], refs.score("goal", "test")["A"])
    assert tiny["A_hat_test"] == pytest.approx(a_hat)
    assert tiny["random_C_test"] == refs.score("random", "test")["C"]
    init = chance.untrained_seeds(ENV, "size=9", "tiny")
    assert tiny["untrained_A_test"] == pytest.approx(sum(s["A_test"] for s in init) / len(init))
    paths = write_report(rows, tmp_path)
    md = paths["md"].read_text()
    row = next(line for line in md.splitlines() if line.startswith("| tiny | 500 | 200 |"))
    assert row.split(" | ")[5] == f"{a_hat:.2f} [{a_hat:.2f}, {a_hat:.2f}]"  # identical seeds: a point
    assert f"{refs.score('random', 'train')['A']:.2f} / {refs.score('random', 'test')['C']:.2f} / " in row
    assert "random A_tr/C/A/proxy" in table_text(rows)
    ea = EventAccumulator(str(paths["tensorboard"] / run_dirname(ENV, "size=9", "tiny")))
    ea.Reload()
    assert [(e.step, e.value) for e in ea.Scalars("sweep/random_A_test")] == [
        (s, pytest.approx(refs.score("random", "test")["A"])) for s in (100, 200)]
    assert ea.Scalars("sweep/A_hat_test")[-1].value == pytest.approx(a_hat)
