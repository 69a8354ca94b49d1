"""Sending e-mail over SMTP (COURSEWIRE_SMTP_URL): one connection per message, in a worker thread.

`smtps://host[:465]` is implicit TLS (RFC 8314 §3.3); `smtp://host[:587]` upgrades with STARTTLS (RFC 3207)
whenever the server offers it, and must offer it when credentials are configured, unless the server is on
this machine (a loopback address), so a password never crosses a network unencrypted. Certificates are
checked against the system's trust store (SSL_CERT_FILE names another). Credentials are sent with AUTH
(RFC 4954) and never appear in a log line or an error.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import smtplib
import ssl
from email.message import EmailMessage

from calendars.config import SmtpSettings
from calendars.model import ProviderError

log = logging.getLogger(__name__)

TIMEOUT = 30.0  # seconds for the connection and for each reply


class MailError(ProviderError):
    """A message was not sent.

    permanent: True when the server refused the recipient or the message for good (a 5xx reply to RCPT
    or DATA, RFC 5321 §4.2.1): sending the same message again fails again, so the address counts as
    refused. False for everything retrying can fix: the server unreachable, a timeout, TLS failures, 4xx
    replies (greylisting, a full mailbox, 451), refused credentials or sender (the operator's settings).
    code: the SMTP reply code, when there was one. The message never holds the password.
    """

    def __init__(self, message: str, permanent: bool, *, code: int | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code


class Mailer:
    """Sends messages through the SMTP server of `settings` (calendars.config.parse_smtp_url).

    ssl_context: the TLS client context; by default the system's trust store with hostname checks
    (tests and servers with a private CA pass their own). timeout: seconds, for the connection and each
    reply.
    """

    def __init__(
        self, settings: SmtpSettings, *, ssl_context: ssl.SSLContext | None = None, timeout: float = TIMEOUT
    ) -> None:
        self.settings = settings
        self.timeout = timeout
        self._context = ssl_context

    def __repr__(self) -> str:
        scheme = "smtps" if self.settings.tls else "smtp"
        return f"Mailer({scheme}://{self.settings.host}:{self.settings.port})"

    async def send(self, message: EmailMessage) -> None:
        """Send one message to the recipients of its To header, from the address of its From header.

        Returns when the server accepted it (250 after DATA). Raises MailError: permanent=True when the
        server refused the recipient or the message with a 5xx reply, permanent=False for anything worth
        retrying (RFC 5321 §4.2.1: 4xx is transient, 5xx permanent). Runs smtplib in a worker thread.
        """
        await asyncio.to_thread(self._send, message)

    def _send(self, message: EmailMessage) -> None:
        where = f"{self.settings.host}:{self.settings.port}"
        try:
            client = self._connect()
        except smtplib.SMTPConnectError as exc:
            # A refused greeting (421, 554) is about us, not the recipient: retry later.
            raise MailError(
                f"{where} refused the connection ({exc.smtp_code} {self._text(exc.smtp_error)})",
                False,
                code=exc.smtp_code,
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise MailError(f"cannot connect to the SMTP server {where}: {self._reason(exc)}", False) from None
        try:
            self._secure_and_login(client, where)
            try:
                client.send_message(message)
            except smtplib.SMTPRecipientsRefused as exc:
                refusals = list(exc.recipients.items())
                permanent = all(code >= 500 for _, (code, _) in refusals)
                said = "; ".join(f"{addr}: {code} {self._text(text)}" for addr, (code, text) in refusals)
                raise MailError(f"{where} refused the recipient ({said})", permanent, code=refusals[0][1][0]) from None
            except smtplib.SMTPSenderRefused as exc:
                # The sender is COURSEWIRE_MAIL_FROM: the operator's setting, not this recipient's fault.
                raise MailError(
                    f"{where} refused the sender address ({exc.smtp_code} {self._text(exc.smtp_error)});"
                    " check COURSEWIRE_MAIL_FROM",
                    False,
                    code=exc.smtp_code,
                ) from None
            except smtplib.SMTPDataError as exc:
                raise self._error(f"{where} refused the message", exc) from None
            except smtplib.SMTPNotSupportedError:
                # send_message asks for SMTPUTF8 for non-ASCII addresses; this server cannot take them.
                raise MailError(f"{where} does not accept internationalized (SMTPUTF8) addresses", True) from None
            except smtplib.SMTPResponseException as exc:
                raise self._session_error(where, exc) from None
            except (OSError, smtplib.SMTPException) as exc:
                raise MailError(f"sending through {where} failed: {self._reason(exc)}", False) from None
        finally:
            self._close(client)
        log.info("mail sent through %s to %s", where, message.get("To", ""))

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        if s.tls:
            return smtplib.SMTP_SSL(s.host, s.port, timeout=self.timeout, context=self._tls_context())
        return smtplib.SMTP(s.host, s.port, timeout=self.timeout)

    def _secure_and_login(self, client: smtplib.SMTP, where: str) -> None:
        s = self.settings
        try:
            client.ehlo()
            if not s.tls:
                if client.has_extn("starttls"):
                    client.starttls(context=self._tls_context())
                    client.ehlo()
                elif s.username and not local_server(s.host, _peer(client)):
                    raise MailError(
                        f"{where} does not offer STARTTLS; coursewire does not send credentials unencrypted"
                        " (use smtps:// or a server that offers STARTTLS)",
                        False,
                    )
            if s.username:
                client.login(s.username, s.password or "")
        except MailError:
            raise
        except smtplib.SMTPAuthenticationError as exc:
            raise MailError(
                f"{where} refused the credentials of COURSEWIRE_SMTP_URL"
                f" ({exc.smtp_code} {self._text(exc.smtp_error)})",
                False,
                code=exc.smtp_code,
            ) from None
        except smtplib.SMTPNotSupportedError:
            raise MailError(f"{where} offers no AUTH, but COURSEWIRE_SMTP_URL has credentials", False) from None
        except smtplib.SMTPResponseException as exc:
            raise self._session_error(where, exc) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise MailError(f"talking to {where} failed: {self._reason(exc)}", False) from None

    def _tls_context(self) -> ssl.SSLContext:
        if self._context is None:
            self._context = ssl.create_default_context()
        return self._context

    @staticmethod
    def _close(client: smtplib.SMTP) -> None:
        # The message is accepted or refused already: a failing QUIT changes nothing.
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()

    def _error(self, what: str, exc: smtplib.SMTPResponseException) -> MailError:
        """A reply to the message itself (DATA). RFC 5321 §4.2.1: 5yz is a permanent negative reply, 4yz
        transient."""
        text = f"{what} ({exc.smtp_code} {self._text(exc.smtp_error)})"
        return MailError(text, exc.smtp_code >= 500, code=exc.smtp_code)

    def _session_error(self, where: str, exc: smtplib.SMTPResponseException) -> MailError:
        """A refusal of the session (EHLO, STARTTLS, RSET...): about the server or our settings, never
        the recipient, so worth retrying whatever the code."""
        text = f"{where} answered {exc.smtp_code} {self._text(exc.smtp_error)}"
        return MailError(text, False, code=exc.smtp_code)

    def _text(self, said: bytes | str) -> str:
        text = said.decode("utf-8", "replace") if isinstance(said, bytes) else str(said)
        return self._scrub(" ".join(text.split()))

    def _reason(self, exc: BaseException) -> str:
        return self._scrub(str(exc) or type(exc).__name__)

    def _scrub(self, text: str) -> str:
        """Remove the password (as typed and as AUTH PLAIN/LOGIN send it) from text a server or a library
        produced, in case either echoes it."""
        secret = self.settings.password
        if not secret:
            return text
        user = self.settings.username or ""
        forms = {
            secret,
            base64.b64encode(secret.encode()).decode(),
            base64.b64encode(f"\0{user}\0{secret}".encode()).decode(),
        }
        for form in sorted(forms, key=len, reverse=True):
            text = text.replace(form, "***")
        return text


def local_server(host: str, peer: str | None) -> bool:
    """Whether the SMTP server is on this machine, where credentials may go without TLS: the configured
    host is `localhost` or a loopback address, or the connection (peer: its remote address) went to one.
    IPv4-mapped IPv6 loopback addresses count."""
    if host.lower().rstrip(".") == "localhost":
        return True
    for text in (host, peer):
        try:
            address = ipaddress.ip_address((text or "").split("%", 1)[0])
        except ValueError:
            continue
        mapped = getattr(address, "ipv4_mapped", None)
        if address.is_loopback or (mapped is not None and mapped.is_loopback):
            return True
    return False


def _peer(client: smtplib.SMTP) -> str | None:
    if client.sock is None:
        return None
    try:
        return str(client.sock.getpeername()[0])
    except OSError:
        return None
