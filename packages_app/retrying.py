"""Pure: how long a publication waits before its next attempt after a transient error.

Exponential backoff with full jitter (a random wait between 0 and base * 2^(attempt-1)), never
shorter than what Kombo asked for (Retry-After, ratelimit-reset), and never longer than the cap.
"""
import random

from .kombo import BACKOFF_BASE_OVERRIDES, LONGER_BACKOFF_CODES

LONGER_BACKOFF_FACTOR = 4.0


def backoff_seconds(*, attempt, base, cap, code=None, retry_after=None, rng=random):
    """Seconds to wait after failed attempt number `attempt` (1-based)."""
    base = BACKOFF_BASE_OVERRIDES.get(code, base)
    if code in LONGER_BACKOFF_CODES:
        base *= LONGER_BACKOFF_FACTOR
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    wait = rng.uniform(0, ceiling)
    if retry_after is not None:
        wait = max(wait, retry_after)
    return min(wait, cap)
