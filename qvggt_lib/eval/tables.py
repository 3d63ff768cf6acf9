"""Markdown tables: the one builder, the paper's Table 1 shape with retention, and evaluate() results.

    markdown_table(header, rows)     any table (numeric columns right-aligned)
    comparison_table(rows)           Method | Bits | metrics | retention vs rows[0] (Table 1)
    format_table(results)            evaluate() results, one row per model and per baseline
    fidelity_table(results, ref)     evaluate(..., reference=...) results: closeness to a reference model
    retention(key, value, fp)        percent of the float model kept
"""

from __future__ import annotations

import math

METRIC_NAMES = {
    "auc30": "AUC@30", "auc15": "AUC@15", "auc5": "AUC@5", "auc3": "AUC@3",
    "rra30": "RRA@30", "rta30": "RTA@30", "depth_abs_rel": "AbsRel", "depth_delta1": "δ1",
    "point_acc": "Acc", "point_comp": "Comp", "point_nc": "NC",
}
PERCENT_KEYS = {"auc30", "auc15", "auc5", "auc3", "rra30", "rta30"}

METHOD_NAMES = {"fp": "FP", "rtn": "RTN", "smoothquant": "SmoothQuant", "gptq": "GPTQ",
                "quarot": "QuaRot", "quantvggt": "QuantVGGT"}
TABLE_COLUMNS = {"auc30": "AUC@30", "auc15": "AUC@15", "auc5": "AUC@5", "auc3": "AUC@3",
                 "depth_abs_rel": "AbsRel", "point_acc": "Acc", "point_comp": "Comp"}
LOWER_IS_BETTER = {"depth_abs_rel", "point_acc", "point_comp"}
FIDELITY_NAMES = {"auc30": "AUC@30 vs ref.", "auc15": "AUC@15 vs ref.", "auc5": "AUC@5 vs ref.",
                  "auc3": "AUC@3 vs ref.", "depth_rel_diff": "Δ depth (%)",
                  "points_rel_diff": "Δ points (%)", "rotation_diff_deg": "Δ rot. (°)"}


def retention(key: str, value: float, reference: float) -> float:
    """Percent of the float model kept: Q / FP * 100, or FP / Q * 100 for lower-is-better keys
    (AbsRel, Acc, Comp), so 100 means "as good as float" and smaller is worse either way."""
    numerator, denominator = (reference, value) if key in LOWER_IS_BETTER else (value, reference)
    return 100.0 * numerator / denominator if denominator else float("nan")


def comparison_table(rows: list[dict], columns: dict[str, str] = TABLE_COLUMNS,
                     retained=("auc30", "depth_abs_rel")) -> str:
    """A markdown table in the shape of the paper's Table 1.

    rows: dicts with "method", "bits" and "metrics" (an evaluate() result or any dict holding
    the column keys); rows[0] is the float reference that the retention columns divide by.
    An optional "label" replaces the method name. AUC columns (keys containing "auc") get one
    decimal, "*seconds" none, the rest three.
    """
    reference = rows[0]["metrics"]
    head = ["Method", "Bits", *columns.values(),
            *(f"{columns.get(k, k)} ret. (%)" for k in retained)]
    lines = []
    for row in rows:
        metrics = row["metrics"]
        cells = [row.get("label") or METHOD_NAMES.get(row["method"], row["method"]),
                 "fp32" if row["method"] == "fp" else row["bits"].upper()]
        cells += [_cell(metrics.get(k), 1 if "auc" in k else 0 if k.endswith("seconds")
                        else 3) for k in columns]
        cells += [_cell(None if metrics.get(k) is None or reference.get(k) is None
                        else retention(k, metrics[k], reference[k]), 1) for k in retained]
        lines.append(cells)
    return markdown_table(head, lines, right=[False, False] + [True] * (len(head) - 2))


def _cell(value, digits: int) -> str:
    return "–" if value is None or not math.isfinite(float(value)) else f"{value:.{digits}f}"


def markdown_table(header, rows, right: list[bool] | None = None) -> str:
    """A markdown table: ``header`` a list of column names, ``rows`` lists of cells (str()'d).

    right: which columns are right-aligned; None: those whose every cell reads as a number.
    """
    header = [str(h) for h in header]
    rows = [[str(c) for c in row] for row in rows]
    if any(len(row) != len(header) for row in rows):
        raise ValueError("every row needs one cell per header column")

    def numeric(text: str) -> bool:
        try:
            float(text.replace(",", "").replace("%", ""))
            return True
        except ValueError:
            return False

    if right is None:
        right = [bool(rows) and all(numeric(r[j]) for r in rows) for j in range(len(header))]
    align = ["---:" if r else "---" for r in right]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _format_value(key: str, value) -> str:
    if value is None or not math.isfinite(float(value)):
        return "–"
    return f"{value:.1f}" if key in PERCENT_KEYS else f"{value:.3f}"


def format_table(results: dict, keys=tuple(METRIC_NAMES)) -> str:
    """A markdown table with one row per model and one per baseline.

    ``results`` is one ``evaluate`` result (its row is called "model") or a mapping
    ``{name: result}``. Baseline rows come from the results' ``baselines`` and are shown once
    when several models share them (same scenes), else once per model. Percentages
    (AUC, RRA, RTA) get one decimal, the rest three.
    """
    if "auc30" in results or "baselines" in results:
        results = {"model": results}
    rows: list[tuple[str, dict]] = list(results.items())
    by_baseline: dict[str, list[tuple[str, dict]]] = {}
    for model_name, result in results.items():
        for name, metrics in (result.get("baselines") or {}).items():
            by_baseline.setdefault(name, []).append((model_name, metrics))
    for name, entries in by_baseline.items():
        if all(metrics == entries[0][1] for _, metrics in entries):
            rows.append((f"{name} baseline", entries[0][1]))
        else:
            rows += [(f"{name} baseline ({model_name})", metrics) for model_name, metrics in entries]
    cells = [[name, *(_format_value(k, metrics.get(k)) for k in keys)] for name, metrics in rows]
    header = ["", *(METRIC_NAMES.get(key, key) for key in keys)]
    return markdown_table(header, cells, right=[False] + [True] * len(keys))


def fidelity_table(results: dict[str, dict], reference: str) -> str:
    """One row per model of ``{name: evaluate(model, reference=...)}``: the pose AUCs with the
    reference model's cameras as the truth (percent, one decimal; 100 = the same cameras) and
    the distances to its outputs (two decimals)."""
    rows = [[name, *(_cell(result["fidelity"].get(key), 1 if key.startswith("auc") else 2)
                     for key in FIDELITY_NAMES)] for name, result in results.items()]
    return markdown_table([f"fidelity to {reference}", *FIDELITY_NAMES.values()], rows,
                          right=[False] + [True] * len(FIDELITY_NAMES))
