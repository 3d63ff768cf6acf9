"""The one markdown-table builder and the two tables built on it."""

import pytest

from qvggt_lib.eval.tables import comparison_table, format_table, markdown_table, retention


def test_markdown_table_shape_and_alignment():
    text = markdown_table(["name", "count"], [["a", "1,000"], ["b", "2"]])
    lines = text.splitlines()
    assert lines[0] == "| name | count |" and lines[1] == "|---|---:|" and len(lines) == 4
    with pytest.raises(ValueError):
        markdown_table(["a", "b"], [["only one"]])


def test_comparison_table_right_aligns_metrics_and_divides_by_the_first_row():
    fp = {"method": "fp", "bits": "w16a16", "metrics": {"auc30": 80.0, "depth_abs_rel": 0.10}}
    q = {"method": "rtn", "bits": "w4a4", "metrics": {"auc30": 60.0, "depth_abs_rel": 0.20}}
    lines = comparison_table([fp, q], {"auc30": "AUC@30", "depth_abs_rel": "AbsRel"}).splitlines()
    assert lines[0] == "| Method | Bits | AUC@30 | AbsRel | AUC@30 ret. (%) | AbsRel ret. (%) |"
    assert lines[1] == "|---|---|---:|---:|---:|---:|"
    assert lines[3] == "| RTN | W4A4 | 60.0 | 0.200 | 75.0 | 50.0 |"
    assert retention("depth_abs_rel", 0.2, 0.1) == pytest.approx(50.0)


def test_format_table_has_one_row_per_model_and_shared_baseline():
    result = {"auc30": 50.0, "baselines": {"trivial": {"auc30": 0.0}}}
    lines = format_table({"a": result, "b": result}, keys=("auc30", "point_acc")).splitlines()
    assert lines[1] == "|---|---:|---:|"
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| a", "| b", "| trivial baseline"]
    assert lines[2].endswith("| 50.0 | – |")
