"""Delivery settings from the environment (webhooks/config.py): the networks callbacks may reach although not public
are those of COURSEWIRE_ALLOWED_NETWORKS (every outbound request) and COURSEWIRE_WEBHOOK_ALLOWED_NETWORKS together."""

from __future__ import annotations

import ipaddress

import pytest

from storage import outbound
from webhooks.config import ConfigError, DeliveryConfig


def test_callbacks_may_reach_the_networks_of_both_variables() -> None:
    config = DeliveryConfig.from_env(
        {
            "COURSEWIRE_ALLOWED_NETWORKS": "10.1.0.0/16, 127.0.0.0/8",
            "COURSEWIRE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8,fd00::/8",
        }
    )
    assert config.allowed_networks == tuple(ipaddress.ip_network(n) for n in ("10.1.0.0/16", "127.0.0.0/8", "fd00::/8"))
    for address in ("10.1.2.3", "127.0.0.1", "fd00::5"):
        assert outbound.allowed(address, config.allowed_networks)
    assert not outbound.allowed("10.2.0.1", config.allowed_networks)
    assert outbound.check_url("http://10.1.2.3:8080/hook", config.allowed_networks) == "http://10.1.2.3:8080/hook"


@pytest.mark.parametrize("name", ["COURSEWIRE_ALLOWED_NETWORKS", "COURSEWIRE_WEBHOOK_ALLOWED_NETWORKS"])
def test_either_variable_alone_opens_its_networks(name: str) -> None:
    assert DeliveryConfig.from_env({name: "192.168.0.0/24"}).allowed_networks == (
        ipaddress.ip_network("192.168.0.0/24"),
    )


def test_without_either_variable_only_public_addresses_are_reachable() -> None:
    assert DeliveryConfig.from_env({}).allowed_networks == ()
    assert DeliveryConfig.from_env({"COURSEWIRE_ALLOWED_NETWORKS": ""}).allowed_networks == ()


@pytest.mark.parametrize("name", ["COURSEWIRE_ALLOWED_NETWORKS", "COURSEWIRE_WEBHOOK_ALLOWED_NETWORKS"])
def test_a_bad_entry_is_refused_naming_its_variable(name: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}: 'intranet' is not a network in CIDR form$"):
        DeliveryConfig.from_env({name: "10.0.0.0/8, intranet"})
