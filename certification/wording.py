"""Rules about words: Power Platform product names, sentence and title case, http(s) URLs, `x-ms-summary`."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from certification.document import Report

PRODUCT_NAMES = (
    "power apps",
    "powerapps",
    "power automate",
    "microsoft flow",
    "logic apps",
    "power bi",
    "power platform",
    "power virtual agents",
    "copilot studio",
)


EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
SMALL_WORDS = frozenset(
    {"a", "an", "and", "as", "at", "by", "for", "from", "in", "of", "on", "or", "per", "the", "to", "via", "with"}
)


def product_name(text: str) -> str | None:
    """The first Power Platform product name `text` mentions (lower case), or None."""
    lowered = text.lower()
    return next((name for name in PRODUCT_NAMES if name in lowered), None)


def valid_url(value: Any) -> bool:
    """True for an absolute http(s) URL with a host and no spaces."""
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and " " not in value


def plain(text: str) -> str:
    """`text` in lower case with every run of other characters than letters and digits made one space."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def looks_title_case(summary: str) -> bool:
    """True when every later word is capitalised, as in 'Upload File' (acronyms such as HTTP do not count)."""
    words = [w for w in summary.split()[1:] if w[:1].isalpha() and w.lower() not in SMALL_WORDS]
    ordinary = [w for w in words if not (w.isupper() or any(c.isdigit() for c in w))]
    return bool(ordinary) and all(w[0].isupper() for w in ordinary)


def is_title_case(text: str) -> bool:
    """True when every word starts with a capital, small words such as 'of' inside the phrase aside."""
    words = re.findall(r"[A-Za-z][A-Za-z0-9']*", text)
    return all(w[0].isupper() or (i > 0 and w in SMALL_WORDS) for i, w in enumerate(words))


def check_x_ms_summary(summary: str, where: str, report: Report) -> None:
    """Warn when an `x-ms-summary` is longer than 80 characters or not in Title Case."""
    if len(summary) > 80:
        report.warn("XMsSummaryTooLong", where, f"x-ms-summary has {len(summary)} characters; keep it to 80")
    if not is_title_case(summary):
        report.warn("XMsSummaryNotTitleCase", where, f"x-ms-summary {summary!r} should be in Title Case")
