"""Values stored before the document declared their limits still reach the flows; stored error texts stay bounded."""

from __future__ import annotations

from datetime import UTC, datetime

from hooks import deliver, make_worker, subscribe
from receiver import Receiver
from support import Api, build_world

from storage.deliveries import Outcome
from storage.errors import MAX_STORED_MESSAGE


def test_a_legacy_over_long_title_is_cut_to_fit_not_lost(api: Api, receiver: Receiver) -> None:
    """A course whose title was stored longer than today's maxLength still fires CoursePublished, title cut to fit."""
    world = build_world(api)  # provisioning publishes the course
    course = world.course["Id"]
    api.ok("POST", f"/odata/v2/Courses({course})/Unpublish", 204)
    subscribe(api, "CoursePublished", f"{receiver.url}/published")
    with api.db.write() as conn:  # as an older version, without the limit, could have stored it
        conn.execute("UPDATE courses SET title = ? WHERE id = ?", ("Q" * 3000, course))
    api.ok("POST", f"/odata/v2/Courses({course})/Publish", 204)
    deliver(make_worker(api))
    [notification] = receiver.notifications()
    title = notification["Title"]
    assert title.startswith("QQQ") and title.endswith("…") and len(title) <= 255


def test_stored_error_texts_are_bounded() -> None:
    """An attempt's error, response and reason are cut to what the document declares, whatever raised them."""
    outcome = Outcome("d", "w", 1, datetime.now(UTC), "dead", error="E" * 100_000, reason="R" * 5000, response="x")
    assert len(outcome.error or "") == MAX_STORED_MESSAGE and len(outcome.reason or "") == MAX_STORED_MESSAGE
    assert outcome.response == "x"
