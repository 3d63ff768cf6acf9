"""Build the course website from the committed notebooks and docs, offline (no execution).

    python scripts/build_site.py [--out build/site]

Stages a Sphinx source tree under OUT/src (the README as the landing page, the notebooks in
course order with a "run it yourself" box and their measured run time, the background docs and
results, MathJax copied from the jupyter-server-mathjax package) and writes the HTML to OUT/html.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jupyter_server_mathjax
import nbformat

ROOT = Path(__file__).resolve().parents[1]
DOCS = {  # page -> source, first in the "Background and results" section
    "docs/results": "docs/results.md",
    "docs/results-notes": "docs/results-notes.md",
    "docs/benchmarks": "docs/benchmarks.md",
    "docs/memory": "docs/memory.md",
    "docs/model-card": "data/checkpoints/README.md",
    "docs/portability": "docs/portability.md",
    "docs/notebook-conventions": "docs/notebook-conventions.md",
}


def run_box(name: str, seconds: float | None) -> str:
    """The markdown cell put first on every notebook page."""
    timing = (f"It runs in about {seconds:.0f} s on 2 CPU cores with the shipped tiny model "
              "(measured when its outputs were recorded; see the portability notes)."
              if seconds is not None else "Its run time has not been measured yet.")
    return (f":::{{admonition}} Run it yourself\n:class: tip\n{timing} The outputs below are the "
            "committed ones, not re-computed for this page. On your machine:\n\n"
            f"```bash\npip install -e \".[dev]\"\njupyter lab notebooks/{name}\n```\n\n"
            f"or run it as a test, as CI does: `python -m pytest --nbval-lax notebooks/{name}`.\n:::")


def stage(src: Path) -> list[str]:
    """Write the Sphinx source tree; returns the notebook page names in course order."""
    shutil.rmtree(src, ignore_errors=True)
    (src / "notebooks").mkdir(parents=True)
    (src / "docs").mkdir()
    shutil.copy(ROOT / "site" / "conf.py", src / "conf.py")
    shutil.copytree(Path(jupyter_server_mathjax.__file__).parent / "static", src / "_static" / "mathjax")
    times = json.loads((ROOT / "docs" / "notebook_times.json").read_text())["seconds"]
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        nb.cells.insert(1, nbformat.v4.new_markdown_cell(run_box(path.name, times.get(path.name))))
        nbformat.write(nb, src / "notebooks" / path.name)
    docs = dict(DOCS)  # then every other page in docs/ (a glossary, background notes), by name
    docs.update({f"docs/{p.stem}": f"docs/{p.name}" for p in sorted((ROOT / "docs").glob("*.md"))
                 if f"docs/{p.stem}" not in docs})
    for page, source in docs.items():
        shutil.copy(ROOT / source, src / f"{page}.md")
    toctrees = [("The course", [f"notebooks/{p.stem}" for p in notebooks]),
                ("Background and results", list(docs))]
    index = (ROOT / "README.md").read_text()
    for caption, pages in toctrees:
        index += f"\n```{{toctree}}\n:caption: {caption}\n:hidden:\n\n" + "\n".join(pages) + "\n```\n"
    (src / "index.md").write_text(index)
    return [p.stem for p in notebooks]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "site", help="output folder")
    args = parser.parse_args(argv)
    stage(args.out / "src")
    html = args.out / "html"
    result = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-W", "--keep-going",
                             str(args.out / "src"), str(html)], check=False)
    if result.returncode == 0:
        print(f"built {html / 'index.html'}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
