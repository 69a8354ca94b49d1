"""Every entity set's one definition (storage.odata.model types), collected into MODEL."""

from __future__ import annotations

from storage.odata.entities import courses, sessions
from storage.odata.entities.calendar import CALENDAR_CONNECTIONS
from storage.odata.entities.catalogs import COURSE_CATALOGS, COURSE_CATEGORIES, COURSE_TAGS
from storage.odata.entities.courses import COURSES
from storage.odata.entities.enrollments import ENROLLMENTS
from storage.odata.entities.people import USER_FIELD_VALUE, USERS
from storage.odata.entities.sessions import ATTENDANCE, COURSE_SESSIONS, SESSION_REGISTRATIONS
from storage.odata.model import Model

MODEL = Model(
    entity_sets=(
        COURSE_CATALOGS,
        COURSE_CATEGORIES,
        COURSE_TAGS,
        COURSES,
        COURSE_SESSIONS,
        SESSION_REGISTRATIONS,
        ATTENDANCE,
        ENROLLMENTS,
        USERS,
        CALENDAR_CONNECTIONS,
    ),
    complex_types=(*courses.COMPLEX_TYPES, *sessions.COMPLEX_TYPES, USER_FIELD_VALUE),
)
