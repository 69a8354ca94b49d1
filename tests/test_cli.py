"""The command line through click's runner: keys, demo data, events, export; and its help matches the README."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from connector.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run(tmp_path: Path):
    runner = CliRunner()

    def invoke(*args: str, ok: bool = True):
        result = runner.invoke(main, ["--data-dir", str(tmp_path / "data"), *args])
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return invoke


def test_apikey_create_json_list_and_revoke(run) -> None:
    """`apikey create --json` prints id, username, key, access once; list never shows secrets; revoke works."""
    created = json.loads(run("apikey", "create", "--name", "flows", "--access", "read", "--json").output)
    assert set(created) == {"id", "username", "key", "access"}
    assert (created["username"], created["access"]) == ("api", "read")
    listed = run("apikey", "list").output
    assert created["id"] in listed and created["key"] not in listed
    run("apikey", "revoke", created["id"])
    assert json.loads(run("apikey", "list", "--json").output)[0]["revoked_at"]


def test_user_errors_are_one_line(run) -> None:
    """Revoking an unknown key fails with one clear line, not a traceback."""
    result = run("apikey", "revoke", "nope", ok=False)
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ["Error: no API key with id 'nope'"]


def test_demo_loads_once_and_events_lists_the_log(run) -> None:
    """`demo` loads data and prints a key the first time only; `events` shows what happened."""
    first = run("demo").output
    assert "Demo API key" in first
    assert "already loaded" in run("demo").output
    log = run("events", "--type", "EnrollmentCreated", "--limit", "100").output
    assert log.count("EnrollmentCreated") == 6
    lines = run("events", "--after", "0", "--limit", "3", "--json").output.splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3]


def test_export_connector_writes_both_files_for_the_host(run, tmp_path: Path) -> None:
    """`export-connector --host` writes the two files with that host."""
    out = tmp_path / "export"
    run("export-connector", "--host", "lms.contoso.com", "--out", str(out))
    definition = json.loads((out / "apiDefinition.swagger.json").read_text())
    assert definition["host"] == "lms.contoso.com"
    assert (out / "apiProperties.json").exists()
    bad = run("export-connector", "--host", "https://lms.contoso.com/x", "--out", str(out), ok=False)
    assert bad.exit_code == 1 and "Error:" in bad.output


def test_check_passes_on_the_shipped_files(run) -> None:
    """`coursewire check` finds no errors in the connector files the project ships."""
    assert "0 error(s)" in run("check").output


def commands(group: click.Group, prefix: str = "") -> list[str]:
    out = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            out += commands(command, f"{prefix}{name} ")
        else:
            out.append(f"{prefix}{name}")
    return out


@pytest.mark.parametrize("command", commands(main))
def test_every_command_and_option_is_in_the_readme(command: str) -> None:
    """Each CLI command, and each of its long options, appears in the README's CLI section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Command line", 1)[1].split("\n## ", 1)[0]
    assert f"coursewire {command}" in section, f"README does not document `coursewire {command}`"
    cmd = main
    for part in command.split():
        cmd = cmd.commands[part]  # type: ignore[attr-defined]
    for param in cmd.params:
        for opt in param.opts:
            if opt.startswith("--"):
                assert re.search(
                    rf"coursewire {re.escape(command)}\b[^\n]*{re.escape(opt)}|`{re.escape(opt)}`", section
                ), f"README lacks {opt} of `coursewire {command}`"
