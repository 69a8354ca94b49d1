"""A normal, non-editable install works: the wheel holds every package and every file read at run time, and
the `coursewire` it installs checks, exports and serves from outside the checkout.

The wheel is built offline from a copy of the checkout with this environment's setuptools (pinned in the test
extra), installed without dependencies into a fresh venv that borrows this environment's installed packages
through a .pth file (which does not carry over this environment's editable finder), and run from a temporary
folder, so nothing of the checkout is on its path.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import site
import socket
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
# Folders of the checkout whose packages are not installed.
NOT_INSTALLED = {"tests", "bench", "build", "dist", "data"}
# Checkout folder -> installed package name, where they differ (pyproject.toml [tool.setuptools.package-dir]).
RENAMED = {"openapi": "coursewire_openapi"}
# Files other than Python modules that code reads at run time, by checkout path.
DATA_FILES = [
    "openapi/apiDefinition.swagger.json",
    "openapi/apiProperties.json",
    "openapi/schemas/powerplatform.apiDefinition.schema.json",
    "openapi/schemas/powerplatform.apiProperties.schema.json",
    "openapi/schemas/lms365.reference.swagger.json",
    "openapi/schemas/README.md",
]
TENANT = [
    "--publisher",
    "Contoso Learning",
    "--website",
    "https://www.contoso.com",
    "--privacy-policy",
    "https://www.contoso.com/privacy",
    "--contact-name",
    "Contoso IT",
    "--contact-email",
    "lms@contoso.com",
    "--brand-color",
    "#0b5cad",
]

pytestmark = [pytest.mark.slow, pytest.mark.system]


def checkout_package_dirs() -> list[Path]:
    """Every package folder of the checkout that is meant to be installed (subpackages included)."""
    found = []
    for init in sorted(ROOT.rglob("__init__.py")):
        parts = init.parent.relative_to(ROOT).parts
        if parts and parts[0] not in NOT_INSTALLED and not any(p.startswith(".") for p in parts):
            found.append(init.parent)
    return found


def checkout_packages() -> list[str]:
    """Dotted names, as installed, of the package folders of the checkout."""
    return sorted(installed_path(folder).replace("/", ".") for folder in checkout_package_dirs())


def installed_path(checkout_path: Path) -> str:
    """Where a file of the checkout lands in the wheel: `openapi/x.json` -> `coursewire_openapi/x.json`."""
    first, *rest = checkout_path.relative_to(ROOT).parts
    return "/".join((RENAMED.get(first, first), *rest))


def test_pyproject_lists_every_package_of_the_checkout() -> None:
    """A package folder missing from pyproject.toml's list would be missing from the wheel (a fast check; the
    wheel below shows the same in full)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert sorted(config["packages"]) == checkout_packages()
    assert config["package-dir"] == {"coursewire_openapi": "openapi"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the checkout (so the build leaves nothing in it)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".*", "__pycache__", "*.egg-info", "build", "dist", "data", "connector-export", "bench", "tests"
        ),
    )
    built = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"),
            *("-w", str(work / "dist"), str(source)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (found,) = (work / "dist").glob("coursewire-*.whl")
    return found


def test_the_wheel_holds_every_module_and_data_file(wheel: Path) -> None:
    """Every Python module of the installed packages and every file read at run time is in the wheel."""
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = [installed_path(path) for folder in checkout_package_dirs() for path in folder.glob("*.py")]
    assert len(modules) > 60
    expected = {*modules, *(installed_path(ROOT / f) for f in DATA_FILES)}
    assert sorted(expected - names) == []


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed (no pip of its own; this environment's pip installs into it), its
    dependencies borrowed from this environment. Returns its bin folder."""
    venv = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    (purelib,) = (venv / "lib").glob("python3*/site-packages")
    (purelib / "borrowed_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    python = venv / "bin" / "python"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return venv / "bin"


def run(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "COURSEWIRE_"))}
    env["COURSEWIRE_DATA_DIR"] = str(cwd / "data")
    return subprocess.run(
        [str(bin_dir / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working folder outside the checkout."""
    return tmp_path_factory.mktemp("elsewhere")


def test_the_installed_code_is_the_wheel_not_the_checkout(installed: Path, elsewhere: Path) -> None:
    """The venv imports coursewire from its own site-packages, and the server and the payload builder find
    the document there."""
    probe = (
        "import json, certification, connector, coursewire_openapi, storage, webhooks;"
        "from connector.app import load_spec; from webhooks import payloads;"
        "assert load_spec()['swagger'] == '2.0'; assert payloads.body_schema('CourseCompleted');"
        "print(json.dumps([m.__file__ for m in (certification, connector, coursewire_openapi, storage, webhooks)]"
        " + [str(payloads.SPEC_PATH)]))"
    )
    result = run(installed, elsewhere, "python", "-c", probe)
    assert result.returncode == 0, result.stderr
    venv = installed.parent
    for path in json.loads(result.stdout):
        assert Path(path).is_relative_to(venv), path


def test_installed_check_and_export(installed: Path, elsewhere: Path) -> None:
    """`coursewire check` checks the installed files; `export-connector` writes the tenant's files from them,
    and `check` on those passes with no placeholder left."""
    shipped = run(installed, elsewhere, "coursewire", "check")
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    assert "0 error(s)" in shipped.stdout
    assert f"Checked {installed.parent}" in shipped.stdout
    exported = run(installed, elsewhere, "coursewire", "export-connector", "--host", "lms.contoso.com", *TENANT)
    assert exported.returncode == 0, exported.stderr
    out = elsewhere / "connector-export"
    assert json.loads((out / "apiDefinition.swagger.json").read_text())["host"] == "lms.contoso.com"
    checked = run(installed, elsewhere, "coursewire", "check", str(out / "apiDefinition.swagger.json"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "0 error(s)" in checked.stdout and "PlaceholderValue" not in checked.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def serving(installed: Path, elsewhere: Path) -> Iterator[tuple[str, str]]:
    """The installed `coursewire serve` (one worker) on a free port: (base URL, API key)."""
    created = run(installed, elsewhere, "coursewire", "apikey", "create", "--name", "wheel", "--json")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["key"]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "COURSEWIRE_"))}
    env["COURSEWIRE_DATA_DIR"] = str(elsewhere / "data")
    log = (elsewhere / "serve.log").open("wb")
    process = subprocess.Popen(
        [str(installed / "coursewire"), "serve", "--port", str(port), "--workers", "1"],
        cwd=elsewhere,
        env=env,
        stdout=log,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:  # a readiness probe, not a fixed sleep
            try:
                if requests.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not start: {(elsewhere / 'serve.log').read_text()}")
            time.sleep(0.05)
        yield base, key
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_installed_serve_answers_a_request(serving: tuple[str, str]) -> None:
    """The installed server serves the API: a key made by the installed CLI lists courses."""
    base, key = serving
    response = requests.get(base + "/odata/v2/Courses", auth=("api", key), timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["value"] == []
    assert requests.get(base + "/odata/v2/Courses", timeout=10).status_code == 401
