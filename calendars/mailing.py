"""The e-mail fallback's sender: one iMIP message per person and session day (calendars.imip), sent through
the configured SMTP server (calendars.mail), with a link to the person's calendar page.

Failures become the provider errors the sync engine sorts (calendars/sync.py): a temporary SMTP failure
(4xx, no connection) is Unavailable and the pair is retried with backoff, so a failing SMTP server loses
nothing; a refused address (5xx for the recipient) is Rejected and not retried.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from calendars import imip
from calendars.config import CalendarConfig
from calendars.mail import Mailer, MailError
from calendars.model import CalendarItem, Rejected, Unavailable
from calendars.sync import Recipient
from storage import calendar_links
from storage.calendar import ItemRecord
from storage.db import Database

# How long the calendar page link in an e-mail can be opened: e-mails are read days later, so longer than
# the API's CalendarConnectionLink (COURSEWIRE_CALENDAR_LINK_TTL); still single use.
MAIL_LINK_TTL = timedelta(days=7)


class MailSender:
    """`await sender(method, item, record, recipient, sequence, now)` sends a REQUEST or a CANCEL."""

    def __init__(self, db: Database, config: CalendarConfig, public_url: str) -> None:
        if config.smtp is None or not config.mail_from:
            raise ValueError("e-mail needs COURSEWIRE_SMTP_URL and COURSEWIRE_MAIL_FROM")
        self.db = db
        self.sender = config.mail_from
        self.public_url = public_url.rstrip("/")
        self.mailer = Mailer(config.smtp)

    def _link(self, user_id: str) -> str | None:
        if not self.public_url:
            return None
        token, _ = calendar_links.create_link(self.db, user_id, MAIL_LINK_TTL.total_seconds())
        return f"{self.public_url}/calendar/link/{token}"

    async def __call__(
        self,
        method: str,
        item: CalendarItem,
        record: ItemRecord | None,
        to: Recipient,
        sequence: int,
        now: datetime,
    ) -> None:
        if not to.email:
            raise Rejected(f"user {to.user_id} has no e-mail address")
        build = imip.request_message if method == "REQUEST" else imip.cancel_message
        try:
            message = build(
                item,
                sequence=sequence,
                dtstamp=now,
                sender=self.sender,
                recipient=to.email,
                recipient_name=to.name,
                connect_link=self._link(to.user_id) if method == "REQUEST" else None,
            )
        except ValueError as exc:  # an address that is not one address: not worth a retry
            raise Rejected(f"no e-mail for user {to.user_id}: {exc}") from None
        try:
            await self.mailer.send(message)
        except MailError as exc:
            if exc.permanent:
                raise Rejected(str(exc)) from None
            raise Unavailable(str(exc)) from None
