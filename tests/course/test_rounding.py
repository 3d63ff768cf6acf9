"""fidelity_rows (qvggt_lib.course.rounding): entries of several results sections in one table."""

import json

from qvggt_lib.course.rounding import FIDELITY_COLUMNS, HELDOUT_PREFIX, fidelity_rows


def _entry(auc5, points, rotation, seconds, heldout=None):
    entry = {"metrics": {"fidelity": {"auc5": auc5, "points_rel_diff": points,
                                      "rotation_diff_deg": rotation, "auc30": 99.0}},
             "calibration_seconds": seconds}
    if heldout is not None:
        entry["metrics_heldout"] = {"fidelity": {"auc5": heldout, "points_rel_diff": points / 2,
                                                 "rotation_diff_deg": rotation / 2}}
    return entry


def test_rows_from_two_sections_with_and_without_heldout_scenes(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({
        "table1": {"quarot/w4a4": _entry(72.0, 1.2, 1.0, 10.0, heldout=70.0)},
        "rounding": {"paper/w4a4": _entry(69.0, 1.4, 1.2, 88.0)},
    }))
    rows = fidelity_rows({"QuaRot": ("table1", "quarot/w4a4"), "paper": ("rounding", "paper/w4a4")},
                         path)
    assert list(rows) == ["QuaRot", "paper"]  # in the order asked for
    assert rows["QuaRot"] == {"AUC@5 vs FP": 72.0, "Δ points (%)": 1.2, "Δ rot. (°)": 1.0,
                              HELDOUT_PREFIX + "AUC@5 vs FP": 70.0,
                              HELDOUT_PREFIX + "Δ points (%)": 0.6,
                              HELDOUT_PREFIX + "Δ rot. (°)": 0.5, "time (s)": 10.0}
    assert set(rows["paper"]) == {*FIDELITY_COLUMNS.values(), "time (s)"}  # no held-out columns
    only_auc = fidelity_rows({"paper": ("rounding", "paper/w4a4")}, path, {"auc30": "AUC@30 vs FP"})
    assert only_auc == {"paper": {"AUC@30 vs FP": 99.0, "time (s)": 88.0}}


def test_a_missing_file_section_or_entry_gives_none(tmp_path):
    path = tmp_path / "results.json"
    assert fidelity_rows({"x": ("table1", "rtn/w4a4")}, path) is None  # no file
    path.write_text(json.dumps({"table1": {"rtn/w4a4": _entry(30.0, 2.0, 3.0, 0.1)}}))
    assert fidelity_rows({"x": ("rounding", "paper/w4a4")}, path) is None  # no section
    assert fidelity_rows({"x": ("table1", "rtn/w4a4"), "y": ("table1", "gptq/w4a4")}, path) is None
    assert fidelity_rows({"x": ("table1", "rtn/w4a4")}, path)["x"]["AUC@5 vs FP"] == 30.0
