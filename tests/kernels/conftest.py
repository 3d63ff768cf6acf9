"""Shared setup for the kernel tests.

The tests call the kernels with ``backend="triton"``. On a machine without CUDA that runs
Triton's CPU interpreter whether or not ``TRITON_INTERPRET=1`` was set (the package builds
interpreted twins of its kernels on demand), so nothing here changes the environment of
other test files. On a CUDA machine the same tests run the compiled kernels.

If ``qvggt_kernels`` is not installed yet (``pip install -e .``), it is loaded from the
repository's ``kernels/`` folder.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest
import torch

if importlib.util.find_spec("qvggt_kernels") is None:  # not installed: use the source tree
    _pkg = pathlib.Path(__file__).resolve().parents[2] / "kernels"
    _spec = importlib.util.spec_from_file_location(
        "qvggt_kernels", _pkg / "__init__.py", submodule_search_locations=[str(_pkg)]
    )
    _mod = importlib.util.module_from_spec(_spec)
    sys.modules["qvggt_kernels"] = _mod
    _spec.loader.exec_module(_mod)

import qvggt_kernels  # noqa: F401


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
