"""Settings: read once from COURSEWIRE_* environment variables, frozen, passed down."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from calendars.config import CalendarConfig, CalendarConfigError
from storage.outbound import IPNetwork
from webhooks.config import ConfigError, DeliveryConfig

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class SettingsError(ValueError):
    """A COURSEWIRE_* variable has a value coursewire cannot use."""


@dataclass(frozen=True)
class RateLimit:
    """At most `calls` accepted calls in any `period` seconds per API key (COURSEWIRE_RATE_LIMIT), a sliding window:
    the certified LMS365 connector documents 600 calls per 60-second renewal period per connection."""

    calls: int
    period: float

    @classmethod
    def parse(cls, text: str) -> RateLimit | None:
        """Parse `600/60` (calls/seconds) or `off`; None means no limit.

        Raises SettingsError for anything else.
        """
        text = text.strip().lower()
        if text in ("off", "none", "0"):
            return None
        match = re.fullmatch(r"(\d+)\s*/\s*(\d+(?:\.\d+)?)", text)
        if not match or int(match[1]) < 1 or float(match[2]) <= 0:
            raise SettingsError(f"COURSEWIRE_RATE_LIMIT={text!r}: expected CALLS/SECONDS such as 600/60, or off")
        return cls(int(match[1]), float(match[2]))


@dataclass(frozen=True)
class Settings:
    """Everything the server, the CLI and the workers need to know about their environment."""

    data_dir: Path = Path("data")
    database_url: str = ""
    rate_limit: RateLimit | None = field(default_factory=lambda: RateLimit(600, 60.0))
    page_size: int = 100
    max_page_size: int = 1000
    max_upload_bytes: int = 50 * 1024 * 1024
    max_json_bytes: int = 1024 * 1024
    # What one user who is not an administrator may keep in uploaded files, in bytes (0: no quota).
    upload_quota_bytes: int = 1024 * 1024 * 1024
    # Uploads are refused (507) while they would leave less free disk than this under the data directory.
    min_free_bytes: int = 1024 * 1024 * 1024
    # A request's line and headers together, in bytes (431 past it).
    max_header_bytes: int = 64 * 1024
    # Seconds a client may take to send a request's line and headers.
    header_timeout: float = 30.0
    # Seconds a client may take to send a request's body once its head is complete (an upload: after these, at
    # least connector.server.MIN_UPLOAD_RATE bytes a second on average).
    body_timeout: float = 30.0
    # Connections (and requests in progress) one server process serves at once; more get 503.
    max_connections: int = 1000
    public_url: str | None = None
    trusted_proxies: tuple[IPNetwork, ...] = LOOPBACK
    workers: int = 0
    provisioning_interval: float = 1.0
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    # The calendar mirror: OAuth clients and endpoints, SMTP, link lifetime (COURSEWIRE_MICROSOFT_*, ...).
    calendar: CalendarConfig = field(default_factory=CalendarConfig)

    def __post_init__(self) -> None:
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{self.data_dir / 'coursewire.db'}")

    def trusts(self, address: str | None) -> bool:
        """Whether a peer at `address` is a proxy whose X-Forwarded-* headers count (COURSEWIRE_TRUSTED_PROXIES)."""
        try:
            ip = ipaddress.ip_address((address or "").split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.trusted_proxies)

    @property
    def database_path(self) -> str:
        """The SQLite file (or `:memory:`) named by database_url."""
        return database_path(self.database_url)

    @property
    def files_dir(self) -> Path:
        """Where uploaded files and course folders live."""
        return self.data_dir / "files"

    @property
    def ratelimit_path(self) -> Path:
        """The SQLite file that holds throttling state shared by every server process."""
        return self.data_dir / "ratelimit.db"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from COURSEWIRE_* variables; raises SettingsError naming a bad variable."""
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("COURSEWIRE_DATA_DIR", "data"))
        kwargs: dict[str, object] = {"data_dir": data_dir}
        if env.get("COURSEWIRE_DATABASE_URL"):
            kwargs["database_url"] = env["COURSEWIRE_DATABASE_URL"]
            database_path(env["COURSEWIRE_DATABASE_URL"])  # validate early
        if "COURSEWIRE_RATE_LIMIT" in env:
            kwargs["rate_limit"] = RateLimit.parse(env["COURSEWIRE_RATE_LIMIT"])
        for name, key, low in (
            ("COURSEWIRE_PAGE_SIZE", "page_size", 1),
            ("COURSEWIRE_MAX_UPLOAD_BYTES", "max_upload_bytes", 1),
            ("COURSEWIRE_MAX_JSON_BYTES", "max_json_bytes", 1024),
            ("COURSEWIRE_UPLOAD_QUOTA_BYTES", "upload_quota_bytes", 0),
            ("COURSEWIRE_MIN_FREE_BYTES", "min_free_bytes", 0),
            ("COURSEWIRE_MAX_HEADER_BYTES", "max_header_bytes", 8192),
            ("COURSEWIRE_MAX_CONNECTIONS", "max_connections", 10),
            ("COURSEWIRE_WORKERS", "workers", 0),
        ):
            if name in env:
                kwargs[key] = _int(env, name, low)
        if env.get("COURSEWIRE_PUBLIC_URL"):
            kwargs["public_url"] = _public_url(env["COURSEWIRE_PUBLIC_URL"])
        if "COURSEWIRE_HEADER_TIMEOUT" in env:
            kwargs["header_timeout"] = _seconds(env, "COURSEWIRE_HEADER_TIMEOUT")
        if "COURSEWIRE_BODY_TIMEOUT" in env:
            kwargs["body_timeout"] = _seconds(env, "COURSEWIRE_BODY_TIMEOUT")
        if "COURSEWIRE_TRUSTED_PROXIES" in env:
            kwargs["trusted_proxies"] = _networks(env, "COURSEWIRE_TRUSTED_PROXIES")
        try:
            kwargs["delivery"] = DeliveryConfig.from_env(env)
        except ConfigError as exc:
            raise SettingsError(str(exc)) from None
        try:
            kwargs["calendar"] = CalendarConfig.from_env(env)
        except CalendarConfigError as exc:
            raise SettingsError(str(exc)) from None
        return cls(**kwargs)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """The environment that rebuilds these settings in another process (uvicorn workers)."""
        env = {
            "COURSEWIRE_DATA_DIR": str(self.data_dir),
            "COURSEWIRE_DATABASE_URL": self.database_url,
            "COURSEWIRE_RATE_LIMIT": (
                "off" if self.rate_limit is None else f"{self.rate_limit.calls}/{self.rate_limit.period:g}"
            ),
            "COURSEWIRE_PAGE_SIZE": str(self.page_size),
            "COURSEWIRE_MAX_UPLOAD_BYTES": str(self.max_upload_bytes),
            "COURSEWIRE_MAX_JSON_BYTES": str(self.max_json_bytes),
            "COURSEWIRE_UPLOAD_QUOTA_BYTES": str(self.upload_quota_bytes),
            "COURSEWIRE_MIN_FREE_BYTES": str(self.min_free_bytes),
            "COURSEWIRE_MAX_HEADER_BYTES": str(self.max_header_bytes),
            "COURSEWIRE_HEADER_TIMEOUT": f"{self.header_timeout:g}",
            "COURSEWIRE_BODY_TIMEOUT": f"{self.body_timeout:g}",
            "COURSEWIRE_MAX_CONNECTIONS": str(self.max_connections),
            "COURSEWIRE_TRUSTED_PROXIES": ",".join(str(n) for n in self.trusted_proxies) or "none",
            "COURSEWIRE_WORKERS": str(self.workers),
        }
        if self.public_url:
            env["COURSEWIRE_PUBLIC_URL"] = self.public_url
        return env


def _int(env: Mapping[str, str], name: str, low: int) -> int:
    try:
        value = int(env[name])
    except ValueError:
        raise SettingsError(f"{name}={env[name]!r}: expected a whole number") from None
    if value < low:
        raise SettingsError(f"{name}={value}: must be at least {low}")
    return value


def _seconds(env: Mapping[str, str], name: str) -> float:
    """A positive number of seconds; raises SettingsError naming the variable otherwise."""
    try:
        value = float(env[name])
    except ValueError:
        raise SettingsError(f"{name}={env[name]!r}: expected a number of seconds") from None
    if not value > 0:
        raise SettingsError(f"{name}={value:g}: must be more than 0")
    return value


def _public_url(text: str) -> str:
    """`https://lms.contoso.com/lms/` -> `https://lms.contoso.com/lms`; raises SettingsError unless an http(s) URL
    of at most 1,024 characters without query or fragment (links and stored Urls are built from it)."""
    url = text.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment or len(url) > 1024:
        raise SettingsError(
            f"COURSEWIRE_PUBLIC_URL={text[:80]!r}: expected the public base URL, such as https://lms.contoso.com"
            " (http or https, no query, at most 1,024 characters)"
        )
    return url


def _networks(env: Mapping[str, str], name: str) -> tuple[IPNetwork, ...]:
    """`127.0.0.1/32, 10.0.0.0/8` -> networks; `none` (or empty) -> none; raises SettingsError naming a bad entry."""
    text = env[name].strip()
    if text.lower() in ("", "none", "off"):
        return ()
    networks = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise SettingsError(f"{name}: {part!r} is not an address or network in CIDR form") from None
    return tuple(networks)


def database_path(url: str) -> str:
    """Return the file path of a `sqlite:///path` URL; raises SettingsError for other schemes."""
    if url in ("sqlite://", "sqlite:///:memory:"):
        return ":memory:"
    if not url.startswith("sqlite:///"):
        raise SettingsError(f"COURSEWIRE_DATABASE_URL={url!r}: only sqlite:///PATH is supported by this version")
    return url[len("sqlite:///") :]
