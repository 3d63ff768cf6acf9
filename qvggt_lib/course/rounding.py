"""The full run's rounding story side by side (notebook 05): entries of two sections in one table.

``docs/results.json`` stores QuantVGGT's recipe variants (section "rounding": the paper's recipe,
then GPTQ rounding, then quantized block inputs) apart from the Table 1 methods they are compared
with (section "table1": RTN, GPTQ, QuaRot, ...). :func:`fidelity_rows` picks entries from any
sections and returns their fidelity to the float model, on the test scenes and on the held-out
ones, through the same loader as ``full_results_markdown`` (``full_results.load_full_results``).
"""

from __future__ import annotations

from collections.abc import Mapping

from .full_results import load_full_results

FIDELITY_COLUMNS = {"auc5": "AUC@5 vs FP", "points_rel_diff": "Δ points (%)",
                    "rotation_diff_deg": "Δ rot. (°)"}
HELDOUT_PREFIX = "held-out "


def fidelity_rows(entries: Mapping[str, tuple[str, str]], path=None,
                  columns: Mapping[str, str] = FIDELITY_COLUMNS) -> dict[str, dict[str, float]] | None:
    """{label: {column: value}} for ``entries`` {label: (section, key)} of the full run, e.g.
    {"QuaRot": ("table1", "quarot/w4a4")}.

    Each row has the fidelity ``columns`` (keys of an entry's ``metrics["fidelity"]``, renamed)
    on the test scenes, the same prefixed with ``HELDOUT_PREFIX`` on the held-out scenes where the
    entry has them, and "time (s)" (its quantization wall time). Returns None when the file, a
    section or an entry is missing, so a notebook can say how to produce it instead.
    """
    data = load_full_results(path)
    if data is None or any(key not in data.get(section, {}) for section, key in entries.values()):
        return None
    rows = {}
    for label, (section, key) in entries.items():
        entry = data[section][key]
        row = {name: entry["metrics"]["fidelity"][k] for k, name in columns.items()}
        if "metrics_heldout" in entry:
            row |= {HELDOUT_PREFIX + name: entry["metrics_heldout"]["fidelity"][k]
                    for k, name in columns.items()}
        rows[label] = row | {"time (s)": entry["calibration_seconds"]}
    return rows
