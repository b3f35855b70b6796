"""The schema registry of ``scripts/registry`` (Apicurio Registry 3, in memory).

url = start_registry()              # .../apis/ccompat/v7 (Confluent-compatible)
apicurio_api(url)                   # .../apis/registry/v2 (the converter's, globalIds)
"""

from __future__ import annotations

from urllib.parse import urlsplit

from testkit.e2e.scripts import start_script

CCOMPAT = "/apis/ccompat/v7"


def start_registry() -> str:
    """``scripts/registry start`` (resolved from Maven Central on its first run): the
    Confluent-compatible base URL."""
    return start_script("registry")


def apicurio_api(ccompat_url: str) -> str:
    """Apicurio's own v2 API beside its Confluent-compatible one (the Connect converter's
    URL, and where globalIds resolve)."""
    return ccompat_url.removesuffix(CCOMPAT) + "/apis/registry/v2"


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port
