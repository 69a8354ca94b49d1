"""Course provisioning in the background: a course whose folder cannot be created fails alone, the queue goes on."""

from __future__ import annotations

import errno
import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from support import Api, Clock, World, build_world, error

from connector.background import Provisioner
from storage import courses
from storage.errors import MAX_STORED_MESSAGE


def course_body(catalog_id: str, url: str) -> dict[str, Any]:
    return {
        "CourseCatalogId": catalog_id,
        "CourseType": "ELearning",
        "Title": f"Course {url}",
        "Description": "Basics",
        "Culture": "en-US",
        "UICulture": "en-US",
        "Url": url,
    }


def course(api: Api, course_id: str) -> dict[str, Any]:
    rows = api.ok(
        "GET",
        "/odata/v2/Courses/IncludeNotCreated",
        params={"$filter": f"Id eq '{course_id}'", "$expand": "ProvisioningProgress,ProvisioningError"},
    )["value"]
    assert len(rows) == 1, rows
    return rows[0]  # type: ignore[no-any-return]


def two_courses(api: Api, clock: Clock) -> tuple[str, str]:
    """Two queued courses, the first one older, as an administrator creates them one after the other."""
    catalog = api.ok("POST", "/odata/v2/CourseCatalogs", json={"Title": "Main"})
    first = api.ok("POST", "/odata/v2/Courses", json=course_body(catalog["Id"], "first"))
    clock.advance(seconds=1)
    second = api.ok("POST", "/odata/v2/Courses", json=course_body(catalog["Id"], "second"))
    return first["Id"], second["Id"]


def run(provisioner: Provisioner, passes: int = 5) -> None:
    """Run the provisioner's passes as `serve` runs one per interval."""
    for _ in range(passes):
        provisioner.run_once()


@pytest.fixture
def world(api: Api) -> World:
    return build_world(api)


def test_a_learners_upload_named_like_a_queued_course_cannot_stop_provisioning(
    api: Api, world: World, clock: Clock
) -> None:
    """The review's example: a learner uploads `courses/<new course id>` as a file; the upload is refused and both
    queued courses are still provisioned (today the upload is a 200 and the queue stops for everyone)."""
    first, second = two_courses(api, clock)
    body = (
        b'--b\r\nContent-Disposition: form-data; name="File"; filename="' + first.encode() + b'"\r\n\r\n'
        b"blocker\r\n--b--\r\n"
    )
    response = api.post(
        "/courses",
        user=world.uid("ann"),
        content=body,
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 400, response.text
    assert error(response)["target"] == "FileUploadUrl"
    run(Provisioner(api.db, api.settings.files_dir))
    assert [course(api, c)["ProvisioningProgress"] for c in (first, second)] == ["Created", "Created"]
    assert (api.settings.files_dir / "courses" / first).is_dir()


def test_a_file_in_the_way_of_a_course_folder_fails_that_course_and_the_queue_goes_on(
    api: Api, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """A file where the oldest queued course's folder goes (left by hand, or uploaded before `courses/` was reserved)
    moves that course to Failed with a ProvisioningError saying what is in the way, logged once without a
    traceback; the next course is provisioned in the same passes."""
    first, second = two_courses(api, clock)
    blocker = api.settings.files_dir / "courses" / first
    blocker.parent.mkdir(parents=True)
    blocker.write_bytes(b"in the way")
    provisioner = Provisioner(api.db, api.settings.files_dir)
    with caplog.at_level(logging.INFO, logger="coursewire"):
        run(provisioner)
        clock.advance(minutes=30)  # long past any retry window: nothing more is said about it
        run(provisioner)
    failed, created = course(api, first), course(api, second)
    assert (failed["ProvisioningProgress"], created["ProvisioningProgress"]) == ("Failed", "Created")
    assert f"files/courses/{first}" in failed["ProvisioningError"]
    assert "not a folder" in failed["ProvisioningError"]
    assert str(api.settings.files_dir) not in failed["ProvisioningError"]  # no server paths shown to learners
    assert blocker.read_bytes() == b"in the way"
    about_first = [r for r in caplog.records if first in r.getMessage()]
    assert len(about_first) == 1, [r.getMessage() for r in caplog.records]
    assert about_first[0].levelno == logging.WARNING
    assert not [r for r in caplog.records if r.exc_info]
    refused = api.post(f"/odata/v2/Courses({first})/Publish")
    assert refused.status_code == 409 and "files/courses" in error(refused)["message"]


def test_a_file_named_courses_fails_every_course_with_a_clear_error_and_none_waits_forever(
    api: Api, clock: Clock
) -> None:
    """When `files/courses` itself is a file, each queued course ends Failed saying so, none stays queued."""
    first, second = two_courses(api, clock)
    api.settings.files_dir.mkdir(parents=True)
    (api.settings.files_dir / "courses").write_bytes(b"not a folder")
    run(Provisioner(api.db, api.settings.files_dir))
    for course_id in (first, second):
        shown = course(api, course_id)
        assert shown["ProvisioningProgress"] == "Failed"
        assert f"files/courses/{course_id}" in shown["ProvisioningError"]
        assert len(shown["ProvisioningError"]) <= MAX_STORED_MESSAGE


def fail_mkdir(monkeypatch: pytest.MonkeyPatch, failing: str, code: int) -> list[str]:
    """Make creating the folder of `failing` raise OSError(code), as a full or broken disk would; return the
    list of folders the provisioner tried to create."""
    tried: list[str] = []
    mkdir = Path.mkdir

    def faulty(self: Path, *args: Any, **kwargs: Any) -> None:
        if self.parent.name == "courses":
            tried.append(self.name)
        if self.name == failing:
            raise OSError(code, "injected")
        mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", faulty)
    return tried


def test_a_transient_error_is_retried_for_a_bounded_time_without_blocking_the_queue(
    api: Api, clock: Clock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk (ENOSPC) is retried once per pass while later courses are provisioned; after RETRY_FOR the
    course ends Failed; the retry is logged once, the failure once, never with a traceback."""
    first, second = two_courses(api, clock)
    tried = fail_mkdir(monkeypatch, first, errno.ENOSPC)
    provisioner = Provisioner(api.db, api.settings.files_dir)
    with caplog.at_level(logging.INFO, logger="coursewire"):
        run(provisioner, passes=3)
        assert course(api, second)["ProvisioningProgress"] == "Created"
        assert course(api, first)["ProvisioningProgress"] == "CreatingFolder"
        assert tried.count(first) == 3  # once per pass
        clock.advance(seconds=courses.RETRY_FOR.total_seconds() - 1)
        run(provisioner, passes=1)
        assert course(api, first)["ProvisioningProgress"] == "CreatingFolder"
        clock.advance(seconds=1)
        run(provisioner, passes=3)
    failed = course(api, first)
    assert failed["ProvisioningProgress"] == "Failed"
    assert "disk is full" in failed["ProvisioningError"]
    assert tried.count(first) == 5
    about_first = [r.getMessage() for r in caplog.records if first in r.getMessage()]
    assert len(about_first) == 2, about_first  # retrying, then failed
    assert not [r for r in caplog.records if r.exc_info]


def test_a_transient_error_that_clears_lets_the_course_finish(
    api: Api, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the disk has room again, a course that was waiting to retry is created."""
    first, _ = two_courses(api, clock)
    fail_mkdir(monkeypatch, first, errno.EIO)
    provisioner = Provisioner(api.db, api.settings.files_dir)
    run(provisioner, passes=2)
    monkeypatch.undo()
    run(provisioner, passes=2)
    assert course(api, first)["ProvisioningProgress"] == "Created"


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS, errno.ENAMETOOLONG])
def test_a_permanent_file_system_error_fails_the_course_at_once(
    api: Api, clock: Clock, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """Permission denied, a read-only file system and the like need an operator: the course fails on the first try
    (a test cannot take permissions away from root, so the error is injected)."""
    first, second = two_courses(api, clock)
    tried = fail_mkdir(monkeypatch, first, code)
    run(Provisioner(api.db, api.settings.files_dir), passes=1)
    assert tried.count(first) == 1
    assert [course(api, c)["ProvisioningProgress"] for c in (first, second)] == ["Failed", "Created"]


def test_callers_without_a_retry_set_never_spin(api: Api, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """`while provision_step(...)` (the demo data, the bench) ends even when a folder keeps failing transiently."""
    first, second = two_courses(api, clock)
    fail_mkdir(monkeypatch, first, errno.ENOSPC)
    steps = 0
    while courses.provision_step(api.db, api.settings.files_dir):
        steps += 1
        assert steps < 20
    assert [course(api, c)["ProvisioningProgress"] for c in (first, second)] == ["Failed", "Created"]


def test_an_unexpected_error_in_the_loop_is_logged_once_not_every_second(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An error the provisioner cannot place (a broken database) is logged with its traceback once while it
    repeats, not once per pass."""
    stop = threading.Event()
    calls = 0

    def broken(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 10:
            stop.set()
        raise RuntimeError("database disk image is malformed")

    monkeypatch.setattr(courses, "provision_step", broken)
    with caplog.at_level(logging.INFO, logger="coursewire"):
        Provisioner(api.db, api.settings.files_dir, interval=0).run(stop)
    assert calls == 10
    assert len([r for r in caplog.records if r.exc_info]) == 1
