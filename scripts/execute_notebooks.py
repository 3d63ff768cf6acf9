"""Re-execute the course notebooks in place and record their run times (docs/notebook_times.json).

    python scripts/execute_notebooks.py [notebooks/03_channel_smoothing.ipynb ...]

Without arguments every notebook runs, in course order. The instruction set and thread count
are whatever the environment says; docs/portability.md has the setting the committed outputs
were recorded with. Re-read the prose beside every ignored output afterwards: it quotes digits.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import nbformat
import torch
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
TIMES = ROOT / "docs" / "notebook_times.json"


def main(argv: list[str]) -> int:
    paths = [Path(p) for p in argv] or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    record = json.loads(TIMES.read_text()) if TIMES.exists() else {"seconds": {}}
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        tic = time.perf_counter()
        NotebookClient(nb, timeout=1200, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        seconds = time.perf_counter() - tic
        nbformat.write(nb, path)
        record["seconds"][path.name] = round(seconds)
        print(f"{path.name}: {seconds:.0f} s", flush=True)
    isa = os.environ.get("ATEN_CPU_CAPABILITY", "native")
    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
              if line.startswith("model name")] if cpuinfo.exists() else []
    record.update({
        "machine": f"{models[0] if models else platform.machine()}, {os.cpu_count()} cores, instruction set {isa}, "
                   f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, torch {torch.__version__}",
        "date": datetime.date.today().isoformat(),
        "what": "wall time of executing the notebook (kernel start included)",
    })
    TIMES.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
