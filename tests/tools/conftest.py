"""Fixtures of the tool tests."""
from __future__ import annotations

import pytest

from tests.support import Workspace, build_workspace


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Workspace:
    return build_workspace(tmp_path_factory.getbasetemp() / "tools_workspace")
