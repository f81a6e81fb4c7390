"""The README keeps up with the code: every stage of the registry and every CLI command is documented."""

from __future__ import annotations

import pytest

from s2gr.cli import build_parser
from s2gr_core.stages import STAGES
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


@pytest.mark.parametrize("stage", [s.name for s in STAGES])
def test_every_stage_is_in_the_readme(stage: str) -> None:
    assert f"`{stage}`" in README, f"stage {stage} is not described in README.md"


def test_every_cli_command_is_in_the_readme() -> None:
    commands = build_parser()._subparsers._group_actions[0].choices  # argparse keeps its sub-commands there
    missing = [c for c in commands if f"s2gr {c}" not in README]
    assert not missing, f"s2gr commands not in README.md: {missing}"
