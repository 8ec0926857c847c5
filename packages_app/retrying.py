"""Pure: how long a publication waits before its next attempt after a transient error.

Exponential backoff with full jitter (a random wait between 0 and base * 2^(attempt-1)) capped,
and never shorter than what Kombo asked for (Retry-After, ratelimit-reset), which has a cap of
its own (a server asking for days is not obeyed to the letter).
"""
import random

from .kombo import BACKOFF_BASE_OVERRIDES, LONGER_BACKOFF_CODES

LONGER_BACKOFF_FACTOR = 4.0


def backoff_seconds(*, attempt, base, cap, code=None, retry_after=None, retry_after_cap=None,
                    rng=random):
    """Seconds to wait after failed attempt number `attempt` (1-based)."""
    base = BACKOFF_BASE_OVERRIDES.get(code, base)
    if code in LONGER_BACKOFF_CODES:
        base *= LONGER_BACKOFF_FACTOR
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    wait = rng.uniform(0, ceiling)
    if retry_after is not None:
        asked = retry_after if retry_after_cap is None else min(retry_after, retry_after_cap)
        wait = max(wait, asked)
    return wait
