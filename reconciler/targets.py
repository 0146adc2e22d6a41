"""Where requests go and how hard to try: Kaleyra's pods, one account's target, the retry policy.

Shared by the configuration (which builds them) and the HTTP client (which uses them), so it imports
neither.
"""

from __future__ import annotations

import random
import urllib.parse
from dataclasses import dataclass

POD_HOSTS = {
    "in": "api.in.kaleyra.io",
    "ap": "api.ap.kaleyra.io",
    "sg": "api.ap.kaleyra.io",  # the reference calls it the SG pod; its host is api.ap
    "eu": "api.eu.kaleyra.io",
    "na": "api.na.kaleyra.io",
}


def pod_base_url(pod: str) -> str:
    return f"https://{POD_HOSTS[pod]}"


@dataclass(frozen=True)
class Target:
    """Where one account's requests go."""

    base_url: str
    sid: str
    waba_id: str

    @property
    def url(self) -> str:
        return f"{self.base_url}/v2/{self.sid}/whatsapp/{self.waba_id}/number/update"

    def callback_profile_url(self, profile_id: str) -> str:
        return f"{self.base_url}/v1/{self.sid}/callback/profiles/{urllib.parse.quote(profile_id, safe='')}"

    @property
    def pace_key(self) -> tuple[str, str]:
        """Requests sharing one pace: Kaleyra authenticates (and, we assume, meters) per sid, and its
        callback profile API has no waba, so every WABA of one sid at one base URL shares a rate."""
        return (self.base_url, self.sid)


@dataclass(frozen=True)
class Destination:
    """Where a change is sent: the request URL (endpoint or pod, sid, waba_id) and the API version."""

    url: str
    api_version: str

    def to_json(self) -> dict[str, str]:
        return {"url": self.url, "api_version": self.api_version}


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    deadline_s: float = 120.0
    timeout_s: float = 30.0

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Full jitter (uniform in [0, base * 2^(attempt-1)], capped), never less than Retry-After."""
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        delay = random.uniform(0, ceiling)
        return max(delay, retry_after or 0.0)
