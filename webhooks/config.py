"""Delivery settings, read once from COURSEWIRE_WEBHOOK_* environment variables (and COURSEWIRE_ALLOWED_NETWORKS,
which every outbound request shares)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from storage.outbound import IPNetwork, parse_networks

DEFAULT_SCHEDULE = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 10800.0, 21600.0, 43200.0)


class ConfigError(ValueError):
    """A COURSEWIRE_WEBHOOK_* variable has a value coursewire cannot use."""


@dataclass(frozen=True)
class DeliveryConfig:
    """How deliveries are retried, timed out, batched and guarded.

    retry_schedule: seconds to wait before each retry (the defaults add up to about 22 hours; with
        jitter, about a day). After the last one a delivery is a dead letter.
    timeout: seconds one attempt may take, connecting included.
    batch_window: seconds a notification waits for others to the same subscription to share its POST;
        0 sends every notification on its own.
    allowed_networks: networks callbacks may reach although not public (and over http): those of
        COURSEWIRE_ALLOWED_NETWORKS (every outbound request) and COURSEWIRE_WEBHOOK_ALLOWED_NETWORKS together.
    disable_after: a subscription whose deliveries fail this long, and one goes dead, is disabled.
    """

    retry_schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    timeout: float = 30.0
    batch_window: float = 0.25
    max_batch: int = 100
    allowed_networks: tuple[IPNetwork, ...] = ()
    disable_after: float = 5 * 86400.0
    concurrency: int = 200
    jitter: float = 0.2
    poll_interval: float = 0.05

    @property
    def lease(self) -> timedelta:
        """How long a claim lasts: one attempt's timeout and a margin for recording its outcome."""
        return timedelta(seconds=self.timeout + 30)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DeliveryConfig:
        """Read the COURSEWIRE_WEBHOOK_* variables and COURSEWIRE_ALLOWED_NETWORKS (`environ`, by default the
        process environment); unset or empty ones keep their defaults. Raises ConfigError naming the variable
        with an unusable value."""
        env = os.environ if environ is None else environ
        kwargs: dict[str, object] = {}
        if env.get("COURSEWIRE_WEBHOOK_RETRY_SCHEDULE"):
            kwargs["retry_schedule"] = _seconds_list("COURSEWIRE_WEBHOOK_RETRY_SCHEDULE", env)
        for name, attr, allow_zero in (
            ("COURSEWIRE_WEBHOOK_TIMEOUT", "timeout", False),
            ("COURSEWIRE_WEBHOOK_BATCH_WINDOW", "batch_window", True),
            ("COURSEWIRE_WEBHOOK_DISABLE_AFTER", "disable_after", False),
        ):
            if env.get(name):
                kwargs[attr] = _seconds(name, env[name], allow_zero)
        if env.get("COURSEWIRE_WEBHOOK_CONCURRENCY"):
            kwargs["concurrency"] = max(
                1, int(_seconds("COURSEWIRE_WEBHOOK_CONCURRENCY", env["COURSEWIRE_WEBHOOK_CONCURRENCY"], False))
            )
        networks: list[IPNetwork] = []
        for name in ("COURSEWIRE_ALLOWED_NETWORKS", "COURSEWIRE_WEBHOOK_ALLOWED_NETWORKS"):
            try:
                networks += parse_networks(env.get(name, ""), name)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if networks:
            kwargs["allowed_networks"] = tuple(dict.fromkeys(networks))
        return cls(**kwargs)  # type: ignore[arg-type]


def _seconds(name: str, text: str, allow_zero: bool) -> float:
    value = text.strip().lower()
    if allow_zero and value in ("off", "0"):
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds < 0 or (seconds == 0 and not allow_zero) or seconds != seconds:
        raise ConfigError(f"{name}={text!r}: expected a number of seconds" + (" or off" if allow_zero else ""))
    return seconds


def _seconds_list(name: str, env: Mapping[str, str]) -> tuple[float, ...]:
    parts = [p for p in env[name].replace(" ", "").split(",") if p]
    if not parts:
        raise ConfigError(f"{name}: expected seconds separated by commas, such as 5,30,120,600")
    return tuple(_seconds(name, p, True) for p in parts)
