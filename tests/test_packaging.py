"""Packaging: environment.yml stays a thin wrapper over pyproject, both import packages install."""

from __future__ import annotations

import tomllib
from pathlib import Path

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
