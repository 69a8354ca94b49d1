"""Sending through a real SMTP server (aiosmtpd on 127.0.0.1): TLS as COURSEWIRE_SMTP_URL asks, credentials only
over TLS or to this machine, and failures classified so the fallback retries what can succeed later and stops
writing to an address the server refused for good, without ever showing the password."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage

import pytest
from smtp_support import Certificate, SmtpServer, make_certificate, serving, smtp_server_fixture  # noqa: F401

from calendars.config import parse_smtp_url
from calendars.mail import Mailer, MailError, local_server

USER = "coursewire@contoso.com"
PASSWORD = "S3cret-pa55:word"  # noqa: S105 (a test credential)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("tls"))


def message(recipient: str = "zoe@contoso.com") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "training@contoso.com"
    msg["To"] = recipient
    msg["Subject"] = "Invitation: Fire safety"
    msg.set_content("See you there.\n")
    return msg


def send(mailer: Mailer, msg: EmailMessage | None = None) -> None:
    asyncio.run(mailer.send(msg or message()))


def failure(mailer: Mailer, msg: EmailMessage | None = None) -> MailError:
    with pytest.raises(MailError) as caught:
        send(mailer, msg)
    return caught.value


def test_a_message_reaches_the_server(smtp_server: SmtpServer) -> None:
    """The envelope comes from the From and To headers and the server gets the message as written."""
    send(Mailer(smtp_server.settings()))
    (received,) = smtp_server.received()
    assert received.mail_from == "training@contoso.com"
    assert received.rcpt_tos == ["zoe@contoso.com"]
    assert received.message()["Subject"] == "Invitation: Fire safety"
    assert received.encrypted is False
    assert received.login is None


def test_starttls_protects_the_credentials(certificate: Certificate) -> None:
    """smtp:// with credentials upgrades with STARTTLS before AUTH (the server accepts AUTH only then)."""
    with serving(tls="starttls", certificate=certificate, credentials=(USER, PASSWORD)) as server:
        send(Mailer(server.settings(USER, PASSWORD), ssl_context=server.client_context))
        (received,) = server.received()
    assert received.encrypted is True
    assert received.login == USER


def test_starttls_is_used_whenever_offered(certificate: Certificate) -> None:
    """Without credentials the message still travels encrypted when the server offers STARTTLS."""
    with serving(tls="starttls", certificate=certificate) as server:
        send(Mailer(server.settings(), ssl_context=server.client_context))
        (received,) = server.received()
    assert received.encrypted is True


def test_smtps_speaks_tls_from_the_first_byte(certificate: Certificate) -> None:
    """smtps:// (port 465) is implicit TLS, with AUTH inside it."""
    with serving(tls="implicit", certificate=certificate, credentials=(USER, PASSWORD)) as server:
        settings = parse_smtp_url(f"smtps://{USER.replace('@', '%40')}:{PASSWORD}@127.0.0.1:{server.port}")
        assert settings.tls is True
        send(Mailer(settings, ssl_context=server.client_context))
        (received,) = server.received()
    assert received.encrypted is True
    assert received.login == USER


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_an_untrusted_certificate_stops_the_message(certificate: Certificate, tls: str) -> None:
    """A certificate the system does not trust ends the attempt before anything is sent (no fallback to
    plain text); the error is temporary, as fixing the server's certificate fixes it."""
    with serving(tls=tls, certificate=certificate, credentials=(USER, PASSWORD)) as server:  # type: ignore[arg-type]
        error = failure(Mailer(server.settings(USER, PASSWORD)))  # the default context: the system's CAs
        assert server.received() == []
    assert error.permanent is False
    assert "certificate" in str(error).lower()
    assert PASSWORD not in str(error)


def test_a_local_relay_may_take_credentials_without_tls() -> None:
    """A relay on this machine (127.0.0.1) that offers no STARTTLS still gets the login: nothing leaves
    the host."""
    with serving(credentials=(USER, PASSWORD), auth_require_tls=False) as server:
        send(Mailer(server.settings(USER, PASSWORD)))
        (received,) = server.received()
        assert server.auth_attempts == [USER]
    assert received.login == USER
    assert received.encrypted is False


def test_credentials_are_not_sent_unencrypted_to_another_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server elsewhere that offers no STARTTLS never sees AUTH: the attempt stops with a temporary error
    that says how to fix it. (The test server runs on 127.0.0.1, so the check is told it is elsewhere.)"""
    monkeypatch.setattr("calendars.mail.local_server", lambda host, peer: False)
    with serving(credentials=(USER, PASSWORD), auth_require_tls=False) as server:
        error = failure(Mailer(server.settings(USER, PASSWORD)))
        assert server.auth_attempts == []
        assert server.received() == []
    assert error.permanent is False
    assert "STARTTLS" in str(error)


@pytest.mark.parametrize(
    ("host", "peer", "local"),
    [
        ("localhost", None, True),
        ("LOCALHOST.", None, True),
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.1.1", None, True),
        ("::1", None, True),
        ("::ffff:127.0.0.1", None, True),
        ("relay.internal", "127.0.0.1", True),  # a name that led to this machine
        ("smtp.contoso.com", "203.0.113.25", False),
        ("192.168.1.10", "192.168.1.10", False),
        ("smtp.contoso.com", None, False),
    ],
)
def test_credentials_go_unencrypted_only_to_this_machine(host: str, peer: str | None, local: bool) -> None:
    """Which servers may receive the password without TLS when they offer no STARTTLS: only loopback ones."""
    assert local_server(host, peer) is local


@pytest.mark.parametrize(
    ("code", "stage", "permanent"),
    [
        (451, "RCPT", False),  # local error in processing: try again later
        (452, "DATA", False),  # insufficient storage
        (550, "RCPT", True),  # mailbox unavailable: the address is refused
        (553, "RCPT", True),  # mailbox name not allowed
        (554, "DATA", True),  # transaction failed for this message
    ],
)
def test_replies_are_classified_as_rfc_5321_says(
    smtp_server: SmtpServer, code: int, stage: str, permanent: bool
) -> None:
    """4xx replies are temporary (retry later), 5xx replies to the recipient or the message are permanent
    (RFC 5321 §4.2.1); nothing is delivered either way, and the next attempt goes through."""
    smtp_server.fail_next(code, stage=stage)  # type: ignore[arg-type]
    mailer = Mailer(smtp_server.settings())
    error = failure(mailer)
    assert (error.permanent, error.code) == (permanent, code)
    assert str(code) in str(error)
    assert smtp_server.received() == []

    send(mailer)
    assert len(smtp_server.received()) == 1


def test_a_refused_recipient_is_named(smtp_server: SmtpServer) -> None:
    """The error says which address was refused and what the server said, for the administrator."""
    smtp_server.fail_next(550, text="5.1.1 <nobody@contoso.com>: Recipient address rejected")
    error = failure(Mailer(smtp_server.settings()), message("nobody@contoso.com"))
    assert error.permanent is True
    assert "nobody@contoso.com" in str(error)
    assert "Recipient address rejected" in str(error)


def test_refused_credentials_are_temporary_and_never_shown(
    certificate: Certificate, caplog: pytest.LogCaptureFixture
) -> None:
    """Wrong credentials are the operator's to fix, not the recipient's: temporary. Neither the error, the
    Mailer, the settings nor coursewire's log lines hold the password, even when the server echoes it."""
    caplog.set_level(logging.DEBUG, logger="calendars")
    wrong = PASSWORD + "-old"
    plain = base64.b64encode(f"\0{USER}\0{wrong}".encode()).decode()
    echo = f"535 5.7.8 Authentication failed for {USER} with {wrong} ({plain})"
    with serving(tls="starttls", certificate=certificate, credentials=(USER, PASSWORD), auth_failure=echo) as server:
        settings = parse_smtp_url(f"smtp://{USER.replace('@', '%40')}:{wrong}@127.0.0.1:{server.port}")
        mailer = Mailer(settings, ssl_context=server.client_context)
        error = failure(mailer)
        assert server.received() == []

    assert error.permanent is False
    assert error.code == 535
    assert "credentials" in str(error)
    shown = " ".join([str(error), repr(error), repr(mailer), repr(settings), str(error.args), caplog.text])
    for secret in (wrong, plain, base64.b64encode(wrong.encode()).decode()):
        assert secret not in shown


def test_an_unreachable_server_is_temporary() -> None:
    """Nothing listening (connection refused) is worth retrying."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = failure(Mailer(parse_smtp_url(f"smtp://127.0.0.1:{port}")))
    assert error.permanent is False
    assert f"127.0.0.1:{port}" in str(error)


@contextmanager
def raw_server(greeting: bytes | None) -> Iterator[int]:
    """A TCP listener on 127.0.0.1 that accepts one connection, says `greeting` (or nothing) and waits."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    done = threading.Event()
    accepted: list[socket.socket] = []

    def serve() -> None:
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        accepted.append(connection)
        if greeting:
            connection.sendall(greeting)
        done.wait(10)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        listener.close()
        thread.join(10)
        for connection in accepted:
            connection.close()


def test_a_silent_server_times_out() -> None:
    """A server that accepts the connection and never answers costs the timeout, then a temporary error."""
    with raw_server(None) as port:
        error = failure(Mailer(parse_smtp_url(f"smtp://127.0.0.1:{port}"), timeout=0.3))
    assert error.permanent is False
    assert "timed out" in str(error)


def test_a_refused_greeting_is_temporary() -> None:
    """A 554 greeting refuses this client, not the recipient: temporary."""
    with raw_server(b"554 5.7.1 No SMTP service here\r\n") as port:
        error = failure(Mailer(parse_smtp_url(f"smtp://127.0.0.1:{port}")))
    assert (error.permanent, error.code) == (False, 554)
    assert "No SMTP service here" in str(error)
