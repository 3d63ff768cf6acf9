"""Packaging: environment.yml stays a thin wrapper over pyproject, both import packages install."""

from __future__ import annotations

from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_installs_the_project_and_does_not_duplicate_dependencies():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert any(str(d).startswith("python") for d in deps) and "pip" in deps
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict))
    assert pip_section == ["-e .[dev]"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    names = {d.split(";")[0].split(">")[0].split("<")[0].split("=")[0].strip() for d in pyproject["project"]["dependencies"]}
    conda_names = {str(d).split("=")[0] for d in deps if not isinstance(d, dict)}
    assert conda_names <= {"python", "pip"}, "dependencies belong in pyproject.toml, not environment.yml"
    assert "dev" in pyproject["project"]["optional-dependencies"]
    assert {"torch", "numpy", "scipy", "scikit-learn", "safetensors", "triton"} <= names


def test_both_import_packages_are_installed():
    import qvggt_kernels

    import qvggt_lib

    assert Path(qvggt_lib.__file__).parent == ROOT / "qvggt_lib"
    assert Path(qvggt_kernels.__file__).parent == ROOT / "kernels"


def test_every_library_folder_is_a_listed_package():
    """pyproject lists packages by hand: a new folder left out would be missing from a wheel."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "qvggt_lib").rglob("__init__.py")}
    assert folders <= listed, f"not in pyproject's packages: {sorted(folders - listed)}"


def test_the_core_library_never_imports_the_course_helpers():
    """course/ imports the core; the core (every other module of qvggt_lib) never imports course/."""
    import ast

    for path in (ROOT / "qvggt_lib").rglob("*.py"):
        if "course" in path.relative_to(ROOT / "qvggt_lib").parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            assert not any("course" in name.split(".") for name in names), f"{path} imports {names}"
