"""Oversight against size (``capgap oversight``, ``capgap.eval.oversight``): the summary can fail.

A rung is summarised over its learned seeds only (an unlearned seed's outlier must not move it), a
rung where no seed learned is marked and left out of the slopes, the interval is the Student-t one
over seeds, a search that found nothing is a marked lower bound, and a figure missing on some seeds
says how many it has. The per-run cache is reused on a rerun and refused under other settings. One
end-to-end run of the command on a freshly trained agent, and bad input in one line."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from configs import SMALL

from capgap.envs import UsageError
from capgap.eval import oversight as O
from capgap.eval.stats import interval, slope_ci
from capgap.train.cli import main

CORNER = "capgap/CheeseCorner-v0"
PARAMS = {"nano": 585, "tiny": 7_989, "small": 31_077}
INDEX = {"nano": 0, "tiny": 2, "small": 3}


def record(rung: str, seed: int, learned: bool, detect: float, first: float | None = 10.0,
           warning: float = 5.0, settings: O.Settings | None = None) -> dict[str, Any]:
    """A synthetic run record as :func:`capgap.eval.oversight.measure_run` writes it."""
    figures = {"C_test": 0.9, "A_test": 0.3, "mon/act/detect": detect, "mon/chance/detect": 0.02,
               "mon/act/warning": warning, "mon/act/excess": detect - 0.02}
    for split in O.SPLITS:
        for method in O.METHODS:
            figures[O.FIRST[split, method]] = 257.0 if first is None else first
            figures[O.FIRST[split, method].replace("/first", "/censored")] = float(first is None)
            figures[O.RATE[split, method]] = 0.1
    return {"run": f"CheeseCorner-v0__{rung}__s{seed}", "env": CORNER, "dials": "", "rung": rung,
            "rung_index": INDEX[rung], "seed": seed, "params": PARAMS[rung], "learned": learned,
            "settings": asdict(settings or O.Settings()), "figures": figures}


def records() -> list[dict[str, Any]]:
    return [record("nano", 0, False, 0.50), record("nano", 1, False, 0.40), record("nano", 2, False, 0.30),
            # tiny: seed 2 did not learn and is an outlier: it must not move the rung's figures
            record("tiny", 0, True, 0.10, first=None), record("tiny", 1, True, 0.20, first=30.0),
            record("tiny", 2, False, 0.99, first=1.0),
            record("small", 0, True, 0.05, warning=math.nan), record("small", 1, True, 0.07),
            record("small", 2, True, 0.12)]


def test_the_summary_is_over_learned_seeds_with_a_t_interval_and_marks_a_rung_that_did_not_learn() -> None:
    rows = {r["rung"]: r for r in O.rung_rows(records())}
    assert list(rows) == ["nano", "tiny", "small"]  # ladder order
    nano, tiny, small = rows["nano"], rows["tiny"], rows["small"]
    # a rung where none learned: all its seeds, marked
    assert (nano["n"], nano["n_learned"], nano["learned"]) == (3, 0, False) and "NOT LEARNED" in nano["mark"]
    assert math.isclose(nano["mon/act/detect"], 0.40)
    # a mixed rung: its learned seeds only, the outlier left out
    assert (tiny["n"], tiny["n_runs"], tiny["learned"], tiny["seeds"]) == (2, 3, True, [0, 1])
    key = "mon/act/detect"
    assert (tiny[key], tiny[f"{key}_lo"], tiny[f"{key}_hi"]) == interval([0.10, 0.20], support=(0.0, 1.0))
    assert interval([0.10, 0.20])[1] < 0 and tiny[f"{key}_lo"] == 0.0  # a rate's interval is cut at 0
    assert tiny[f"{key}_lo"] < 0.15 < tiny[f"{key}_hi"] and tiny["mark"] == "2/3 learned (those 2)"
    # a search that found nothing counts budget + 1 and is counted as censored
    first = O.FIRST["train", "random"]
    assert math.isclose(tiny[first], (257 + 30) / 2) and tiny[f"{first}_censored"] == 1
    # a figure missing on one seed: the interval over the others, and how many
    assert small["mon/act/warning_n"] == 2 and small["n"] == 3
    text = "\n".join(O.markdown(records()))
    assert "≥ 143.5 [" in text and "NOT LEARNED (all 3 seeds)" in text and "5.0 [5.0, 5.0] (n=2)" in text


def test_the_slopes_leave_out_the_rungs_that_did_not_learn() -> None:
    (rows,) = O.slopes(records()).values()
    row = next(r for r in rows if r["metric"] == "mon/act/detect")
    want = slope_ci([math.log10(PARAMS["tiny"]), math.log10(PARAMS["small"])], [[0.10, 0.20], [0.05, 0.07, 0.12]])
    assert (row["slope"], row["lo"], row["hi"]) == pytest.approx(want, nan_ok=True)
    assert row["rungs"] == 2 and row["seeds"] == "2,3" and row["slope"] < 0
    # with nano's (unlearned, high) detection counted the slope would be far more negative
    wrong = slope_ci([math.log10(p) for p in PARAMS.values()], [[0.5, 0.4, 0.3], [0.10, 0.20], [0.05, 0.07, 0.12]])
    assert wrong[0] < row["slope"] - 0.05


def test_a_rerun_reads_the_cache_and_other_settings_are_refused(tmp_path: Path) -> None:
    runs = [tmp_path / "runs" / name for name in ("CheeseCorner-v0__tiny__s0", "CheeseCorner-v0__small__s0")]
    calls: list[str] = []

    def fake(run: Path, settings: O.Settings, out: Path) -> dict[str, Any]:
        calls.append(run.name)
        rung = run.name.split("__")[1]
        return record(rung, 0, True, 0.1, settings=settings)

    out = tmp_path / "out"
    settings = O.Settings(queries=8)
    first = O.measure_all(runs, out, settings, fake, log=lambda _: None)
    again = O.measure_all(runs, out, settings, fake, log=lambda _: None)
    assert calls == [r.name for r in runs] and first == again
    with pytest.raises(UsageError, match=r"other settings \(queries 8 -> 16\)"):
        O.measure_all(runs, out, O.Settings(queries=16), fake, log=lambda _: None)
    text = O.write(first, out)
    assert (out / "oversight_CheeseCorner-v0.png").stat().st_size > 0 and "| tiny |" in text
    assert json.loads((out / "oversight.json").read_text())["rungs"][0]["rung"] == "tiny"


@pytest.mark.heavy
def test_the_command_on_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from capgap.train.ppo import Args, train

    run = train(Args(**SMALL, out=str(tmp_path / "runs")))
    out = tmp_path / "ov"
    argv = ["oversight", str(tmp_path / "runs"), "--out", str(out), "--queries", "8", "--batch", "8", "--keep", "1",
            "--replays", "1", "--fit", "16", "--shifted", "8", "--calib", "16", "--test", "16", "--fa-train", "8"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "measured in" in text and "| nano |" in text and "detect act" in text
    assert (out / "runs" / run.name / "oversight.json").exists() and (out / "oversight_CheeseCorner-v0.png").exists()
    assert main(argv) == 0 and "cached" in capsys.readouterr().out


@pytest.mark.parametrize("argv, says", [
    (["oversight", "/no/such/study", "--out", "x"], "is not a directory"),
    (["oversight", ".", "--out", "x", "--help-budget", "1.5"], "--help-budget 1.5 must be in (0, 1)"),
    (["oversight", ".", "--out", "x", "--queries", "0"], "--queries 0 is out of range"),
    (["oversight", ".", "--out", "x", "--shifted", "0"], "--shifted 0 must be >= 1"),
])
def test_bad_input_is_one_line(argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err, err
