"""Whose X-Forwarded-For the hub believes: `[server] trusted_proxies`, nobody's by default.

uvicorn's default believes the header from 127.0.0.1, so any local process could pose as a new
address for every request and never reach the failed-key limit (20 failures a minute per
address, then 429). A real hub process on 127.0.0.1 is sent 25 bad keys, each "forwarded for" a
different address: unless 127.0.0.1 is a trusted proxy they all count against 127.0.0.1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scaffold.hub.services.auth import new_key
from tests.hubproc import running_hub, write_config

ATTEMPTS = 25  # the limit is 20 failed authentications a minute from one address


def statuses_with_rotating_addresses(config: Path) -> tuple[list[int], str]:
    """The statuses of ATTEMPTS bad-key requests, each forwarded for another address; the last message."""
    with running_hub(config) as hub, hub.client("not-a-key") as client:
        answers = [
            client.get("/v1/status", headers={"X-Forwarded-For": f"203.0.113.{n}"}) for n in range(ATTEMPTS)
        ]
    return [answer.status_code for answer in answers], answers[-1].json()["error"]["message"]


def config_with(tmp_path: Path, trusted: list[str] | None) -> Path:
    config = write_config(tmp_path, keys=[("owner", "admin", new_key()[0])])
    if trusted is not None:
        with config.open("a", encoding="utf-8") as handle:
            handle.write(f"[server]\ntrusted_proxies = {json.dumps(trusted)}\n")
    return config


@pytest.mark.parametrize("trusted", [None, ["10.0.0.0/8"]], ids=["no-proxies", "another-proxy"])
def test_forwarded_for_from_an_untrusted_peer_is_ignored(tmp_path: Path, trusted: list[str] | None) -> None:
    statuses, message = statuses_with_rotating_addresses(config_with(tmp_path, trusted))
    assert statuses == [401] * 20 + [429] * 5, statuses
    assert "from 127.0.0.1;" in message, message


def test_forwarded_for_from_a_trusted_proxy_is_believed(tmp_path: Path) -> None:
    """The control: with 127.0.0.1 trusted, each forwarded address is counted on its own."""
    statuses, message = statuses_with_rotating_addresses(config_with(tmp_path, ["127.0.0.1"]))
    assert statuses == [401] * ATTEMPTS, statuses
    assert "not valid" in message, message
