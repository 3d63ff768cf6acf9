"""The results run (scripts/run_results.py): every section on the random tiny model, resumable,
shareable between processes, and the significance test behind the Fig. 5 table."""

import json

import numpy as np
import pytest

from qvggt_lib.eval.results import QUICK, ROUNDING_VARIANTS, ResultsRun, welch_test

SETTINGS = {**QUICK, "checkpoint": None, "quick": True}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    run = ResultsRun(SETTINGS, out, quick=True, threads=1)
    run.run(["table1", "rounding", "epochs", "fig5"])
    return out, json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


def test_every_section_is_stored_with_fidelity_on_both_scene_sets(quick_run):
    _, data, _ = quick_run
    assert set(data["table1"]) == {"rtn/w4a4", "quantvggt/w4a4"}
    assert set(data["rounding"]) == {f"{v}/w4a4" for v in ROUNDING_VARIANTS}
    assert set(data["epochs"]) == {"epochs1", "epochs2"}
    assert len(data["fig5"]) == 2 * 3  # 2 picks x 3 seeds
    for entry in [*data["table1"].values(), *data["rounding"].values()]:
        for key in ("metrics", "metrics_heldout"):
            fidelity = entry[key]["fidelity"]
            assert {"auc30", "auc15", "auc5", "auc3", "points_rel_diff"} <= set(fidelity)
            assert 0 <= fidelity["auc5"] <= 100
    assert data["table1"]["quantvggt/w4a4"]["config"]["weight_rounding"] == "gptq"  # the default
    paper = data["rounding"]["paper/w4a4"]["config"]
    assert (paper["weight_rounding"], paper["input_from"], paper["clip_init_logit"]) == ("rtn", "fp", 4.0)
    # at W4A4 the clips by bits are the paper's clips: "default" repeats "gptq+quantized_inputs"
    rows = data["rounding"]
    assert rows["default/w4a4"]["metrics"]["fidelity"] == rows["gptq+quantized_inputs/w4a4"]["metrics"]["fidelity"]


def test_the_markdown_shows_fidelity_held_out_scenes_and_the_significance_test(quick_run):
    _, _, md = quick_run
    for text in ("AUC@5 vs FP", "Δ points (%)", "held-out test scenes 2..3",
                 "## QuantVGGT's weight rounding", "## Epochs per block", "Welch's t-test",
                 "| nfds |"):
        assert text in md, text


def test_a_second_process_takes_stored_entries_and_merges_its_own(quick_run):
    out, data, _ = quick_run
    late = ResultsRun(SETTINGS, out, quick=True, threads=1)  # started before the entry below
    other = ResultsRun(SETTINGS, out, quick=True, threads=1)
    other.entry("table4", "made_elsewhere", lambda: {"value": 1})
    late.entry("table4", "made_here", lambda: {"value": 2})
    late.entry("table4", "made_elsewhere", lambda: pytest.fail("recomputed a stored entry"))
    late.entry("table1", "rtn/w4a4", lambda: pytest.fail("recomputed a stored entry"))
    stored = json.loads((out / "results.json").read_text())
    assert {"made_elsewhere", "made_here"} <= set(stored["table4"])
    assert stored["table1"] == data["table1"]
    with pytest.raises(SystemExit, match="other settings"):
        ResultsRun({**SETTINGS, "seeds": [0]}, out, quick=True, threads=1)


def test_welch_test_matches_a_hand_computed_case():
    from scipy.stats import t as student_t

    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0, 10.0]
    diff, p = welch_test(a, b)
    # sample variances 5/3 and 10: t = -3.5 / sqrt(5/12 + 2), Welch-Satterthwaite df
    se2 = (5 / 3) / 4 + 10 / 5
    t = -3.5 / np.sqrt(se2)
    df = se2**2 / (((5 / 3) / 4) ** 2 / 3 + (10 / 5) ** 2 / 4)
    assert diff == -3.5 and t == pytest.approx(-2.2514, abs=1e-4) and df == pytest.approx(5.521, abs=1e-3)
    assert p == pytest.approx(2 * student_t.sf(-t, df), rel=1e-9)
    assert welch_test(a, a)[1] == pytest.approx(1.0)


def test_the_notebooks_helper_renders_any_section_or_says_how_to_make_it(quick_run, tmp_path):
    from qvggt_lib.course.full_results import fig5_seed_values, full_results_markdown

    out, _, _ = quick_run
    table1 = full_results_markdown("table1", out / "results.json")
    assert table1.startswith("**Full run**") and "AUC@5 vs FP" in table1 and "| QuantVGGT | W4A4 |" in table1
    assert "Welch" in full_results_markdown("fig5", out / "results.json")
    assert "has no table11 yet" in full_results_markdown("table11", out / "results.json")
    assert "was not found" in full_results_markdown("table1", tmp_path / "none.json")
    with pytest.raises(ValueError, match="unknown section"):
        full_results_markdown("table2", out / "results.json")
    values = fig5_seed_values("fidelity_auc5", out / "results.json")
    assert list(values) == ["random", "nfds"] and all(len(v) == 3 for v in values.values())
