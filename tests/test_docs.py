"""The README documents every setting the config model has (and no setting it lacks)."""

from __future__ import annotations

import re
from pathlib import Path

from mcpmesh.config import MeshSettings, RestartPolicy, ServerConfig

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def documented(table_heading: str) -> set[str]:
    """Setting names in the first column of the table under a heading line."""
    section = README.split(table_heading, 1)[1]
    rows = re.findall(r"^\| `([\w.]+)`(?: / `([\w.]+)`)? \|", section.split("\n\n", 2)[1], re.MULTILINE)
    return {name for row in rows for name in row if name}


def test_every_mesh_setting_is_in_the_readme_table() -> None:
    assert documented("`[mesh]`") == set(MeshSettings.model_fields)


def test_every_server_setting_is_in_the_readme_table() -> None:
    expected = {name for name in ServerConfig.model_fields if name != "restart"}
    expected |= {f"restart.{name}" for name in RestartPolicy.model_fields}
    assert documented("`[servers.<name>]`") == expected
