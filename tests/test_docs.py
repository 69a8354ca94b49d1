"""The README stays true: every setting the code reads is in its configuration table with its real default,
the limits it states are the ones the code enforces, and its commands run as written against a real server."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from connector.edge import MULTIPART_OVERHEAD
from connector.settings import Settings
from connector.validation import MAX_DEPTH, MAX_VALUES, OFFLOAD_BYTES

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _code_settings() -> set[str]:
    names: set[str] = set()
    for package in ("connector", "webhooks", "storage", "calendars"):
        for path in (ROOT / package).rglob("*.py"):
            names |= set(re.findall(r"COURSEWIRE_[A-Z0-9_]*[A-Z0-9](?![A-Z0-9_])", path.read_text()))
    return names


def _table_rows() -> dict[str, str]:
    section = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return {m[1]: m[2] for m in re.finditer(r"^\| `(COURSEWIRE_[A-Z0-9_]+)` \| ([^|]*) \|", section, re.M)}


def test_every_setting_the_code_reads_is_documented() -> None:
    """A COURSEWIRE_* variable the code reads but the README's configuration table lacks is a hidden setting."""
    missing = sorted(_code_settings() - set(_table_rows()))
    assert missing == []


def test_documented_defaults_are_the_real_ones() -> None:
    """The defaults the configuration table states for the limits are the defaults Settings has."""
    rows = _table_rows()
    defaults = Settings()
    assert rows["COURSEWIRE_MAX_JSON_BYTES"].startswith(f"`{defaults.max_json_bytes}`")
    assert rows["COURSEWIRE_MAX_UPLOAD_BYTES"].startswith(f"`{defaults.max_upload_bytes}`")
    assert rows["COURSEWIRE_PAGE_SIZE"].startswith(f"`{defaults.page_size}`")
    proxies = ",".join(str(n).replace("/128", "") for n in defaults.trusted_proxies)
    assert rows["COURSEWIRE_TRUSTED_PROXIES"].startswith(f"`{proxies}`")


def test_the_security_section_states_the_enforced_limits() -> None:
    """The limits table names the nesting bound, the upload framing and the offload threshold the code uses."""
    security = README.split("## Security", 1)[1].split("\n## ", 1)[0]
    assert f"{MAX_DEPTH} levels" in security
    assert f"{MAX_VALUES:,} values" in security
    assert f"{MULTIPART_OVERHEAD // 1024} KiB framing" in security
    assert f"larger than {OFFLOAD_BYTES // 1024} KiB" in security
    assert f"at most {Settings().max_page_size}" in security


# ---------------------------------------------------------------------------------------------- the README runs
#
# The README's commands are run as written, with bash, against a real `coursewire serve --demo` started from a
# temporary folder as the "Run it" command starts it. The only substitutions: the server listens on a free port,
# so `127.0.0.1:8365` becomes `127.0.0.1:<port>`; the folder's `.venv` is a link to the virtual environment the
# tests run in (the install the "Run it" command makes); COURSEWIRE_* variables of the test run are not passed
# on. `KEY` is set by the README's own command.

README_PORT = "127.0.0.1:8365"
BASH = shutil.which("bash") or "/bin/bash"


def _section(title: str) -> str:
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def _code_lines(section: str) -> list[str]:
    """The lines of the section's indented code blocks, without their indentation."""
    return [line[4:] for line in section.splitlines() if line.startswith("    ") and line.strip()]


def _folder(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A folder to run README commands in, with `.venv` pointing at this environment, and their environment."""
    folder = tmp_path / "checkout"
    folder.mkdir()
    (folder / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COURSEWIRE_")}
    return folder, env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _demo_server(folder: Path, env: dict[str, str]) -> Iterator[str]:
    """The "Run it" command's server (its last `&&` part), on a free port; yields its base URL."""
    run_it = _code_lines(README.split("## ", 1)[0])[0]
    command = run_it.rsplit("&&", 1)[1].strip()
    assert command == ".venv/bin/coursewire serve --demo", command
    port = _free_port()
    log = (folder / "serve.log").open("wb")
    process = subprocess.Popen(
        [*shlex.split(command), "--port", str(port)], cwd=folder, env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # a readiness probe, not a fixed sleep
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=1) as answer:  # noqa: S310 (our own server)
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, (folder / "serve.log").read_text()
            time.sleep(0.05)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _run_lines(lines: list[str], folder: Path, env: dict[str, str]) -> list[tuple[int, str]]:
    """Run the lines in one bash, in order (variables carry from one to the next, as in a terminal); return each
    line's exit status and standard output."""
    out = folder.parent / "outputs"
    out.mkdir()
    script = "".join(f'{{ {line}\n}} >"{out}/{i}.out"; echo $? >"{out}/{i}.status"\n' for i, line in enumerate(lines))
    ran = subprocess.run([BASH, "-c", script], cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    results = []
    for i in range(len(lines)):
        status = out / f"{i}.status"
        assert status.exists(), (lines[i], ran.stderr)
        results.append((int(status.read_text()), (out / f"{i}.out").read_text()))
    return results


@pytest.mark.system
def test_the_try_it_commands_run_as_written(tmp_path: Path) -> None:
    """Each line of "Try it" runs alone and as written against `coursewire serve --demo`: it sets KEY itself (the
    README only said "put that key in KEY"), no line continues onto the next (a line ending in `\\`, run alone,
    handed curl a `\\` URL: "URL using bad/illegal format"), and each answers what it promises."""
    lines = _code_lines(_section("Try it"))
    assert lines and not any(line.rstrip().endswith("\\") for line in lines), lines
    assert lines[0].startswith("KEY="), "the first command sets KEY"
    folder, env = _folder(tmp_path)
    with _demo_server(folder, env) as base:
        port = base.rsplit(":", 1)[1]
        ran = _run_lines(
            [line.replace(README_PORT, f"127.0.0.1:{port}") for line in lines] + ['echo "$KEY"'], folder, env
        )
    assert [status for status, _ in ran] == [0] * len(ran), ran
    assert ran[-1][1].startswith("cw_"), "KEY holds an API key"
    for line, (_, output) in zip(lines, ran, strict=False):
        if "/odata/v2/" in line:
            body = json.loads(output)
            assert "error" not in body and body["value"], (line, body)
        if "/odata/v2/Users" in line:
            assert body["value"] and all(set(user) <= {"Title", "Email"} for user in body["value"]), body
    saved = json.loads((folder / "coursewire.swagger.json").read_text())
    assert (saved["swagger"], saved["host"]) == ("2.0", f"127.0.0.1:{port}")


@pytest.mark.system
def test_the_import_steps_coursewire_commands_run_as_written(tmp_path: Path) -> None:
    """The `coursewire ...` commands of "Import the connector" run as written, with `coursewire` on PATH (`paconn`,
    Power Platform's own CLI, is not installed here)."""
    commands = re.findall(r"`(coursewire [^`]+)`", _section("Import the connector into Power Automate"))
    assert len(commands) >= 2, commands
    folder, env = _folder(tmp_path)
    env["PATH"] = f"{folder / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    for command in commands:
        ran = subprocess.run([BASH, "-c", command], cwd=folder, env=env, capture_output=True, text=True, timeout=120)
        assert ran.returncode == 0, (command, ran.stdout, ran.stderr)
