import subprocess
import sys
from pathlib import Path

import pytest

from rfcn.cli import TOOL_MODULES, build_parser, main


def test_every_subcommand_is_registered_under_its_name() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    assert sorted(subparsers.choices) == sorted(TOOL_MODULES)


def test_a_command_imports_only_its_own_module() -> None:
    script = (
        "import sys\n"
        "from rfcn.cli import build_parser\n"
        "build_parser('detect')\n"
        "print('torch' in sys.modules, 'rfcn.tools.train' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.split() == ["False", "False"]


def test_user_errors_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("model:\n  k: three\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {config}: model.k: expected an integer, got 'three'\n"
    assert not (tmp_path / "run").exists()
