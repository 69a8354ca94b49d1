"""A real SMTP server for the e-mail fallback's tests: aiosmtpd on 127.0.0.1, a free port, in its own thread.

It keeps what it received (envelope, raw bytes, whether the session was encrypted and who logged in), can
require AUTH, offer STARTTLS or speak implicit TLS with a throw-away certificate for 127.0.0.1, and can
answer the next N messages with a chosen reply (451, 550...) at RCPT or DATA.

Test modules import the fixture function (`from smtp_support import smtp_server_fixture`), which pytest
knows as `smtp_server`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, Literal

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from calendars.config import SmtpSettings

HOST = "127.0.0.1"
Tls = Literal["none", "starttls", "implicit"]


@dataclass(frozen=True)
class Received:
    """One message the server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    encrypted: bool
    login: str | None

    def message(self) -> EmailMessage:
        """The message as a mail client parses it (stdlib email, the modern policy)."""
        parsed = BytesParser(policy=policy.default).parsebytes(self.data)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class _Failure:
    code: int
    text: str
    stage: Literal["RCPT", "DATA"]
    remaining: int


class _Handler:
    """aiosmtpd handler hooks (https://aiosmtpd.aio-libs.org/en/latest/handlers.html)."""

    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    def _failure(self, stage: str) -> str | None:
        with self.server.lock:
            failure = self.server.failure
            if failure is None or failure.stage != stage or failure.remaining <= 0:
                return None
            failure.remaining -= 1
            return f"{failure.code} {failure.text}"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        refusal = self._failure("RCPT")
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        refusal = self._failure("DATA")
        if refusal:
            return refusal
        auth: object = session.auth_data
        login = auth.login.decode() if isinstance(auth, LoginPassword) else None
        data = envelope.original_content or b""
        received = Received(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            data=data,
            encrypted=session.ssl is not None or self.server.tls == "implicit",
            login=login,
        )
        with self.server.lock:
            self.server.messages.append(received)
        return "250 Message accepted for delivery"


class _Session(Session):
    """aiosmtpd 1.4 sets its own deprecated `login_data` after every successful AUTH, which warns
    (DeprecationWarning, an error under pytest) inside the server; this session keeps it quietly."""

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class _SMTP(SMTP):
    def _create_session(self) -> Session:
        return _Session(self.loop)


class _Controller(Controller):
    """aiosmtpd's Controller bound to port 0: the first connection (its readiness check) must go to the
    port the system chose, which only the listening socket knows."""

    def factory(self) -> SMTP:
        return _SMTP(self.handler, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        super()._trigger_server()  # type: ignore[no-untyped-call]


@dataclass
class SmtpServer:
    """A running server: `settings()` points the Mailer at it; `messages` is what it accepted."""

    port: int = 0
    tls: Tls = "none"
    client_context: ssl.SSLContext | None = None  # trusts the server's certificate
    messages: list[Received] = field(default_factory=list)
    auth_attempts: list[str] = field(default_factory=list)  # the user names clients tried AUTH with
    failure: _Failure | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def settings(self, username: str | None = None, password: str | None = None) -> SmtpSettings:
        return SmtpSettings(HOST, self.port, tls=self.tls == "implicit", username=username, password=password)

    def fail_next(
        self, code: int, count: int = 1, *, stage: Literal["RCPT", "DATA"] = "RCPT", text: str | None = None
    ) -> None:
        """Answer `code` to the next `count` recipients (stage RCPT) or messages (stage DATA)."""
        default = "Requested action aborted: try again later" if code < 500 else "Mailbox unavailable"
        with self.lock:
            self.failure = _Failure(code, text or default, stage, count)

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.messages)


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1 and the files holding it."""

    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        """Verifies the server as a real client does (hostname checks on), trusting only this certificate."""
        return ssl.create_default_context(cafile=str(self.cert_file))


def make_certificate(directory: Path) -> Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "coursewire test SMTP")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return Certificate(cert_file, key_file)


@contextmanager
def serving(
    *,
    tls: Tls = "none",
    certificate: Certificate | None = None,
    credentials: tuple[str, str] | None = None,
    auth_require_tls: bool = True,
    auth_failure: str | None = None,
) -> Iterator[SmtpServer]:
    """Run a server until the block ends.

    tls: "starttls" offers STARTTLS, "implicit" speaks TLS from the first byte (both need certificate).
    credentials: (user, password) for AUTH (PLAIN and LOGIN): required after STARTTLS; offered, and
    optional, over implicit TLS, and without TLS when auth_require_tls=False (what a local relay may do).
    auth_failure: the reply to wrong credentials instead of aiosmtpd's 535.
    """
    server = SmtpServer(tls=tls)
    kwargs: dict[str, Any] = {"server_hostname": "smtp.coursewire.test", "ready_timeout": 30.0}
    if tls != "none":
        assert certificate is not None, "TLS needs a certificate"
        server.client_context = certificate.client_context()
        if tls == "starttls":
            kwargs["tls_context"] = certificate.server_context()
        else:
            kwargs["ssl_context"] = certificate.server_context()
    if credentials is not None:
        user, password = credentials

        def authenticate(
            smtp: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
        ) -> AuthResult:
            if isinstance(auth_data, LoginPassword):
                with server.lock:
                    server.auth_attempts.append(auth_data.login.decode())
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login.decode() == user
                and auth_data.password.decode() == password
            )
            if ok:
                return AuthResult(success=True, handled=False, auth_data=auth_data)
            return AuthResult(success=False, handled=False, message=auth_failure)

        # aiosmtpd warns (UserWarning, an error under pytest) when AUTH is required without TLS; without TLS
        # it is offered instead, and tests check who logged in (Received.login).
        # aiosmtpd offers AUTH before TLS only without auth_require_tls, and knows TLS only from STARTTLS.
        over_tls = auth_require_tls and tls == "starttls"
        kwargs.update(authenticator=authenticate, auth_required=over_tls, auth_require_tls=over_tls)
    controller = _Controller(_Handler(server), hostname=HOST, port=0, **kwargs)
    controller.start()
    server.port = controller.port
    try:
        yield server
    finally:
        controller.stop()


@pytest.fixture(name="smtp_server")
def smtp_server_fixture() -> Iterator[SmtpServer]:
    """A plain SMTP server on 127.0.0.1 (no TLS, no AUTH) collecting what it receives."""
    with serving() as server:
        yield server
