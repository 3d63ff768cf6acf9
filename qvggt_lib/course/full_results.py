"""The full-size results in a notebook: one loader for every section of docs/results.json.

The notebooks run scaled-down versions of the paper's tables live; ``scripts/run_results.py``
runs them at full size and stores them in ``docs/results.json``. ``full_results_markdown``
renders one of its sections exactly as ``docs/results.md`` does, with where and when it was
computed, or says how to produce it when the file or the section is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..eval.results import SECTION_TITLES, fig5_samples, section_markdown

DEFAULT_RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results.json"


def load_full_results(path=None) -> dict | None:
    """The results JSON at ``path`` (default: this checkout's docs/results.json), or None."""
    path = Path(path) if path else DEFAULT_RESULTS
    return json.loads(path.read_text()) if path.is_file() else None


def full_results_markdown(section: str, path=None) -> str:
    """One section (``SECTION_TITLES``) of the full run as markdown, with the run's setting and
    the machines and dates of its entries."""
    if section not in SECTION_TITLES:
        raise ValueError(f"unknown section {section!r}; choose one of {tuple(SECTION_TITLES)}")
    data = load_full_results(path)
    if data is None or not data.get(section) or not data.get("fp"):
        where = Path(path) if path else DEFAULT_RESULTS
        return (f"`{where}` {'has no ' + section + ' yet' if data else 'was not found'}: produce it "
                f"with `python scripts/run_results.py --sections {section}` from the repository "
                "root (tens of minutes to hours on 2 CPU cores).")
    s = data["settings"]
    entries = data[section].values()
    dates = sorted(entry["date"][:10] for entry in entries)
    machines = "; ".join(sorted({entry["machine"] for entry in entries}))
    setting = (f"**Full run** ({data['model']['source']}): {s['scenes']} test scenes x {s['frames']} "
               f"frames; {s['calib_size']} of {s['pool']} NFDS calibration scenes x "
               f"{s['calib_frames']} frames; QuantVGGT `QuantVGGTConfig()` with {s['epochs']} "
               f"epoch(s) unless a row says otherwise. Computed "
               f"{dates[0] if dates[0] == dates[-1] else dates[0] + '..' + dates[-1]} on {machines}.")
    return setting + "\n\n" + section_markdown(data, section).replace("## ", "#### ", 1)


def fig5_seed_values(key: str, path=None) -> dict[str, list[float]]:
    """{calibration pick: its per-seed values of ``key``} from the full run's Fig. 5 (empty if absent)."""
    data = load_full_results(path) or {}
    fig5 = data.get("fig5", {})
    return {pick: values for pick in data.get("settings", {}).get("selections", [])
            if (values := fig5_samples(fig5, pick, key))}
