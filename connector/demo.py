"""Demo data: a catalog, people, an e-learning course, an instructor-led course with sessions, a webinar."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from storage import apikeys, catalogs, courses, enrollments, sessions, users
from storage.db import Database
from storage.models import CLI, NewApiKey

PEOPLE = [
    ("admin@contoso.example", "Ada Admin", "Learning", "Administrator", None),
    ("maria.manager@contoso.example", "Maria Manager", "Operations", "Learner", None),
    ("ivan.instructor@contoso.example", "Ivan Instructor", "Learning", "Learner", None),
    ("lena.learner@contoso.example", "Lena Learner", "Operations", "Learner", "maria.manager@contoso.example"),
    ("omar.learner@contoso.example", "Omar Learner", "Operations", "Learner", "maria.manager@contoso.example"),
    ("pia.learner@contoso.example", "Pia Learner", "Sales", "Learner", "maria.manager@contoso.example"),
    ("raj.learner@contoso.example", "Raj Learner", "Sales", "Learner", "maria.manager@contoso.example"),
    ("sara.learner@contoso.example", "Sara Learner", "Finance", "Learner", None),
]


def load(db: Database, files_dir: Path, base_url: str) -> NewApiKey | None:
    """Load the demo data unless a catalog exists; return the demo API key it created, or None."""
    with db.read() as conn:
        if conn.execute("SELECT 1 FROM catalogs LIMIT 1").fetchone():
            return None
    for login, title, department, role, manager in PEOPLE:
        users.create(
            db,
            CLI,
            {
                "LoginName": login,
                "Email": login,
                "Title": title,
                "Department": department,
                "Role": role,
                "ManagerLoginName": manager,
                "Country": "Denmark",
                "City": "Copenhagen",
                "UserFieldValues": [{"FieldTitle": "Employee number", "Value": str(1000 + len(title))}],
            },
        )
    catalog = catalogs.create_catalog(
        db,
        CLI,
        {"Title": "Contoso Academy", "Description": "Company-wide training", "AdminLogins": ["admin@contoso.example"]},
        base_url,
    )
    common = {"CourseCatalogId": catalog["Id"], "Culture": "en-US", "UICulture": "en-US"}
    security = courses.create(
        db,
        CLI,
        {
            **common,
            "CourseType": "ELearning",
            "Title": "Information security basics",
            "Description": "Passwords, phishing and safe sharing.",
            "Url": "information-security-basics",
            "Categories": [{"Name": "Compliance"}],
            "Tags": [{"TagName": "mandatory"}],
            "CEU": 1,
            "LearningModules": ["Passwords", "Phishing"],
            "Quizzes": ["Final check"],
            "DueDateSettings": {"IsEnabled": True, "DaysAfterEnrollment": "30"},
        },
        base_url,
    )
    first_aid = courses.create(
        db,
        CLI,
        {
            **common,
            "CourseType": "ClassRoom",
            "Title": "First aid at work",
            "Description": "A hands-on day with a certified trainer.",
            "Url": "first-aid-at-work",
            "Categories": [{"Name": "Health and safety"}],
            "Tags": [{"TagName": "ilt"}],
            "TeacherLogins": ["ivan.instructor@contoso.example"],
            "CertificateTemplateId": "first-aid-certificate",
        },
        base_url,
    )
    webinar = courses.create(
        db,
        CLI,
        {
            **common,
            "CourseType": "Webinar",
            "Title": "Quarterly compliance update",
            "Description": "What changed this quarter.",
            "Url": "quarterly-compliance-update",
            "EnrollmentFlow": "LineManagerApproval",
            "Categories": [{"Name": "Compliance"}],
        },
        base_url,
    )
    for _ in range(20):  # the server's provisioner would do this within seconds
        courses.provision_step(db, files_dir)
    start = (db.clock() + timedelta(days=14)).replace(hour=9, minute=0, second=0, microsecond=0, tzinfo=None)
    morning = sessions.create(
        db,
        CLI,
        first_aid["Id"],
        {
            "Title": "First aid, Copenhagen",
            "StartDate": start.isoformat(),
            "EndDate": (start + timedelta(hours=7)).isoformat(),
            "TimeZone": "Romance Standard Time",
            "MaxAttendees": "3",
            "InstructorLogins": ["ivan.instructor@contoso.example"],
            "Room": {"Title": "Room 4.12", "Location": "HQ, Copenhagen", "Source": "Unknown"},
            "EnrollmentDeadline": (start - timedelta(days=2)).isoformat(),
        },
    )
    sessions.create(
        db,
        CLI,
        first_aid["Id"],
        {
            "Title": "First aid, two mornings",
            "StartDate": (start + timedelta(days=7)).isoformat(),
            "EndDate": (start + timedelta(days=8, hours=3)).isoformat(),
            "TimeZone": "Romance Standard Time",
            "Days": [
                {
                    "StartDate": (start + timedelta(days=7)).isoformat(),
                    "EndDate": (start + timedelta(days=7, hours=3)).isoformat(),
                },
                {
                    "StartDate": (start + timedelta(days=8)).isoformat(),
                    "EndDate": (start + timedelta(days=8, hours=3)).isoformat(),
                },
            ],
            "MaxAttendees": "10",
            "MeetingUrl": "https://meet.contoso.example/first-aid",
        },
    )
    sessions.create(
        db,
        CLI,
        webinar["Id"],
        {
            "Title": "Q-update live",
            "StartDate": (start + timedelta(days=3)).isoformat(),
            "EndDate": (start + timedelta(days=3, hours=1)).isoformat(),
            "TimeZone": "UTC",
            "MeetingUrl": "https://meet.contoso.example/q-update",
        },
    )
    for login in ("lena", "omar", "pia", "raj"):
        enrollments.enroll(
            db,
            CLI,
            first_aid["Id"],
            {
                "userLoginName": f"{login}.learner@contoso.example",
                "courseSessionId": morning["Id"],
            },
        )
    for login in ("lena", "sara"):
        enrollments.enroll(db, CLI, security["Id"], {"userLoginName": f"{login}.learner@contoso.example"})
    return apikeys.create(db, "demo", "full")
