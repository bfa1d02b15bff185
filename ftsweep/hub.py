"""The model and dataset hub: whether this process can reach it, decided once, in at most 3 seconds.

huggingface_hub retries a request that cannot connect 5 times with backoff (1 + 2 + 4 + 8 + 8 s, each retry
logged twice), and transformers and datasets ask for several files each: on a machine without internet (a cluster's
compute node) a run whose model was a hub id printed 40 lines and waited 53 s before its one-line error, and one
whose model was in the local cache waited the same before loading it. A TCP connection to the hub's endpoint
decides instead; when it fails, the libraries run offline (HF_HUB_OFFLINE=1), so a cached model or dataset loads at
once and one that is not cached fails at once.

Standard library only: the CLI calls it before anything imports the libraries, which read HF_HUB_OFFLINE then.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import sys
from urllib.parse import urlparse

log = logging.getLogger("ftsweep.hub")

PROBE_SECONDS = 3.0
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
DEFAULT_ENDPOINT = "https://huggingface.co"
_went_offline = False  # set when this process found the hub unreachable (not when the user set HF_HUB_OFFLINE)


def endpoint() -> str:
    """The hub's address: HF_ENDPOINT (a mirror such as https://hf-mirror.com) or huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline() -> bool:
    """The libraries run offline: the user set it, or go_offline_unless_reachable did."""
    return any(os.environ.get(k, "").upper() in ("1", "ON", "YES", "TRUE") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@functools.lru_cache(maxsize=None)
def reachable() -> bool:
    """A TCP connection to the endpoint within PROBE_SECONDS. Behind a proxy (HTTPS_PROXY, ALL_PROXY) a direct
    connection says nothing: the libraries are left to try."""
    if any(os.environ.get(k) for k in PROXY_VARIABLES):
        return True
    url = urlparse(endpoint())
    try:
        socket.create_connection((url.hostname, url.port or (80 if url.scheme == "http" else 443)), timeout=PROBE_SECONDS).close()
    except OSError:
        return False
    return True


def go_offline_unless_reachable() -> None:
    """When the hub cannot be reached: HF_HUB_OFFLINE=1 for the libraries, with one warning. A library already
    imported read its offline flag at import, so its flag is set too."""
    global _went_offline
    if _went_offline or offline() or reachable():
        return
    _went_offline = True
    os.environ["HF_HUB_OFFLINE"] = "1"
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].constants.HF_HUB_OFFLINE = True
    if "datasets" in sys.modules:
        sys.modules["datasets"].config.HF_HUB_OFFLINE = sys.modules["datasets"].config.HF_DATASETS_OFFLINE = True
    log.warning("the hub (%s) cannot be reached: models and datasets load from the local cache only (HF_HUB_OFFLINE=1)",
                endpoint())


def why_offline() -> str:
    """How a refusal names the reason there is no hub: the user's setting, or the failed connection and the mirror
    setting that may get round it (where huggingface.co is blocked, a mirror such as hf-mirror.com often is not)."""
    return f"{endpoint()} cannot be reached (HF_ENDPOINT names a mirror)" if _went_offline else "HF_HUB_OFFLINE=1"
