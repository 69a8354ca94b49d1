"""The command line through click's runner: keys, demo data, events, export; and its help matches the README."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from connector.cli import main

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent / "coursewire"


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


TENANT_OPTIONS = (
    "--publisher",
    "Contoso Learning",
    "--website",
    "https://www.contoso.com",
    "--privacy-policy",
    "https://www.contoso.com/privacy",
    "--contact-name",
    "Contoso IT Service Desk",
    "--contact-email",
    "lms-support@contoso.com",
    "--brand-color",
    "#0b5cad",
)


def export(run, out: Path, *changes: str, ok: bool = True):
    """`export-connector` for lms.contoso.com with the tenant options, `changes` replacing some of them."""
    options = dict(zip(TENANT_OPTIONS[::2], TENANT_OPTIONS[1::2], strict=True))
    options.update(zip(changes[::2], changes[1::2], strict=True))
    args = [part for pair in options.items() for part in pair]
    return run("export-connector", "--host", "lms.contoso.com", *args, "--out", str(out), ok=ok)


def test_export_connector_writes_files_that_check_accepts(run, tmp_path: Path) -> None:
    """`export-connector` writes both files for the host and the tenant, and `check` on the definition alone
    checks the apiProperties.json beside it: no errors, no placeholder and no non-production host left."""
    out = tmp_path / "export"
    written = export(run, out).output
    assert f"coursewire check {out / 'apiDefinition.swagger.json'} {out / 'apiProperties.json'}" in written
    definition = json.loads((out / "apiDefinition.swagger.json").read_text())
    assert (definition["host"], definition["info"]["contact"]["email"]) == (
        "lms.contoso.com",
        "lms-support@contoso.com",
    )
    assert json.loads((out / "apiProperties.json").read_text())["properties"]["publisher"] == "Contoso Learning"
    checked = run("check", str(out / "apiDefinition.swagger.json")).output
    assert f"Checked {out / 'apiDefinition.swagger.json'} and {out / 'apiProperties.json'}" in checked
    assert "0 error(s)" in checked
    assert "PlaceholderValue" not in checked and "HostNotProduction" not in checked


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (("--publisher", "coursewire"), "'--publisher': 'coursewire' is the shipped template's example value"),
        (("--website", "https://coursewire.example.com"), "'--website'"),
        (("--contact-email", "it@example.org"), "'--contact-email'"),
        (("--brand-color", "#007EE5"), "'--brand-color': #007EE5 is Power Platform's default icon colour"),
        (("--privacy-policy", "privacy"), "'--privacy-policy': 'privacy' is not an http(s) URL"),
    ],
)
def test_export_connector_refuses_placeholders_naming_the_option(
    run, tmp_path: Path, change: tuple[str, str], words: str
) -> None:
    """A placeholder or invalid tenant value is a usage error (exit 2) naming the option; nothing is written."""
    result = export(run, tmp_path / "export", *change, ok=False)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith(f"Error: Invalid value for {words}")
    assert not (tmp_path / "export").exists()


def test_export_connector_needs_the_tenant_values(run, tmp_path: Path) -> None:
    """Without the tenant's values there is nothing but placeholders to write: the missing option is named."""
    result = run("export-connector", "--host", "lms.contoso.com", "--out", str(tmp_path / "x"), ok=False)
    assert result.exit_code == 2 and "Missing option '--" in result.output
    refused = run("export-connector", "--host", "https://lms.contoso.com/x", *TENANT_OPTIONS, ok=False)
    assert refused.exit_code == 2 and "Invalid value for '--host'" in refused.output


def test_check_passes_on_the_shipped_files(run) -> None:
    """`coursewire check` finds no errors in the connector files the project ships."""
    output = run("check").output
    assert "0 error(s)" in output
    assert "Checked " in output and "apiProperties.json" in output


def test_check_fails_on_a_file_with_errors(run, tmp_path: Path) -> None:
    """`check FILE` checks that file, not the shipped one: a definition that breaks a rule exits 1."""
    definition = json.loads((ROOT / "openapi" / "apiDefinition.swagger.json").read_text())
    definition["info"]["title"] = "coursewire Power Automate connector"
    target = tmp_path / "apiDefinition.swagger.json"
    target.write_text(json.dumps(definition))
    result = run("check", str(target), ok=False)
    assert result.exit_code == 1
    assert "TitleRestrictedWords" in result.output and "(no apiProperties.json)" in result.output


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "no such file"),
        (b"{", "is not JSON: Expecting property name enclosed in double quotes at line 1, column 2"),
        (b"", "is not JSON: Expecting value at line 1, column 1"),
        (b"\xff\xfe{}", "is not UTF-8 text (byte 0)"),
        ("folder", "is a folder, not a file"),
    ],
)
def test_check_names_the_file_it_cannot_read(run, tmp_path: Path, content: bytes | str | None, words: str) -> None:
    """A missing, non-UTF-8 or non-JSON file, or a folder, is a usage error (exit 2) naming the argument, the
    path and what is wrong, as DEFINITION and as PROPERTIES, without a traceback."""
    bad = tmp_path / "given.json"
    if content == "folder":
        bad.mkdir()
    elif isinstance(content, bytes):
        bad.write_bytes(content)
    shipped = str(ROOT / "openapi" / "apiDefinition.swagger.json")
    for args, name in (([str(bad)], "DEFINITION"), ([shipped, str(bad)], "PROPERTIES")):
        result = run("check", *args, ok=False)
        assert result.exit_code == 2, result.output
        assert result.output.strip().splitlines()[-1] == f"Error: Invalid value for {name}: {bad}: {words}"
        assert result.exception is None or isinstance(result.exception, SystemExit)


def test_check_names_a_file_the_system_cannot_read(run) -> None:
    """A file whose reading fails (Linux's /proc/self/mem answers EIO from offset 0, whoever reads it, root
    included) is a usage error carrying the system's reason."""
    result = run("check", "/proc/self/mem", ok=False)
    assert result.exit_code == 2
    last = result.output.strip().splitlines()[-1]
    assert last == "Error: Invalid value for DEFINITION: /proc/self/mem: Input/output error"


def serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A real `coursewire serve` subprocess that is expected to exit by itself (a server that starts instead
    fails the test by its timeout)."""
    env = {**os.environ, "COURSEWIRE_DATA_DIR": str(tmp_path / "data")}
    command = [str(BIN), "serve", "--workers", "1", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)


def test_serve_on_a_busy_port_says_so_before_announcing(tmp_path: Path) -> None:
    """With the port held by another program, `serve` exits 1 with one line naming the port and `--port`,
    before it announces serving and before it creates or migrates anything."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = serve(tmp_path, "--port", str(port))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "serving" not in result.stdout
    assert result.stderr.strip().splitlines() == [
        f"Error: port {port} on 127.0.0.1 is already in use (another coursewire, or another program, listens on"
        " it); stop that one, or serve on another port with --port"
    ]
    assert not (tmp_path / "data").exists()


def test_serve_on_an_address_of_another_machine_names_the_host_option(tmp_path: Path) -> None:
    """A --host that is not an address of this machine (TEST-NET-1) is named the same way, with `--host`."""
    result = serve(tmp_path, "--host", "192.0.2.1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "serving" not in result.stdout
    assert result.stderr.strip() == "Error: 192.0.2.1 is not an address of this machine; listen on another with --host"


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


def test_version_names_the_installed_package() -> None:
    """`coursewire --version` prints the installed distribution's version (a newcomer looked for it)."""
    from importlib.metadata import version

    from click.testing import CliRunner

    from connector.cli import main

    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"coursewire {version('coursewire')}"
