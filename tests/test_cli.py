"""The command line as a user meets it: help and docs for every command, the mission's command,
one-line errors, and no heavy imports for ``--help``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from helpers import make_image_folder

from fstore.cli import cli

README = (Path(__file__).parent.parent / "README.md").read_text()


def all_commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        found.append((f"{prefix}{name}", command))
        if isinstance(command, click.Group):
            found.extend(all_commands(command, f"{prefix}{name} "))
    return found


@pytest.mark.parametrize("name, command", all_commands(cli), ids=lambda v: str(v))
def test_every_command_has_help_and_is_in_the_readme(name, command):
    assert command.help and len(command.help.strip()) > 20
    result = CliRunner().invoke(cli, [*name.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert f"fstore {name.split()[0]}" in README


def test_help_imports_nothing_heavy():
    code = (
        "import sys\nfrom fstore.cli import main\nsys.argv = ['fstore', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('HEAVY:' + ','.join(m for m in ('torch', 'onnxruntime', 'h5py', 'sklearn', "
        "'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "Commands:" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "HEAVY:"


def test_mission_command_reuses_the_store_folder(store_model, tmp_path, monkeypatch):
    images = tmp_path / "images"
    make_image_folder(images, {"a": 3, "b": 3})
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    first = runner.invoke(
        cli,
        [
            "build",
            str(images),
            "--layer",
            "pool5,fc7",
            "--weights",
            "random",
            "--size",
            "32",
            "--provider",
            "cpu",
            "--json",
        ],
    )
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["images_computed"] == 6
    make_image_folder(images, {"c": 2}, seed=4)
    # No folder, no weights: both come from ./fstore.h5.
    second = runner.invoke(
        cli, ["build", "--layer", "pool5", "--layer", "fc7", "--provider", "cpu", "--json"]
    )
    assert second.exit_code == 0, second.output
    report = json.loads(second.stdout)
    assert report["images_computed"] == 2 and report["images_done_before"] == 6
    info = runner.invoke(cli, ["info", "--json"])
    data = json.loads(info.stdout)
    assert data["images"] == 8 and data["classes"] == ["a", "b", "c"]
    assert data["layers"]["pool5"]["shape"] == [512, 1, 1]
    assert data["provenance"]["weights_origin"] == "random:seed=0"
    text = runner.invoke(cli, ["info"]).stdout
    assert "fc7 4096" in text and "random:seed=0" in text


@pytest.mark.parametrize(
    "args, fragment",
    [
        (
            ["build", "/nonexistent/images", "--layer", "fc7", "--weights", "random"],
            "does not exist",
        ),
        (["build", "--layer", "fc7", "--store", "/nonexistent/s.h5"], "no image folder"),
        (["info", "--store", "/nonexistent/s.h5"], "no store at"),
        (["build", ".", "--layer", "fc9"], "valid layers are"),
    ],
)
def test_user_errors_are_one_line(args, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
