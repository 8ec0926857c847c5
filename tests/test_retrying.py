"""Backoff: full jitter within an exponential ceiling, Retry-After honoured, always capped."""
import random

from packages_app.retrying import backoff_seconds


class Fixed:
    """A stand-in RNG that returns the top of the range, to read the ceiling."""

    def uniform(self, low, high):
        return high


def test_ceiling_doubles_per_attempt_and_is_capped():
    ceilings = [backoff_seconds(attempt=n, base=2, cap=60, rng=Fixed()) for n in range(1, 8)]
    assert ceilings == [2, 4, 8, 16, 32, 60, 60]


def test_full_jitter_stays_within_zero_and_ceiling():
    rng = random.Random(7)
    waits = [backoff_seconds(attempt=4, base=2, cap=60, rng=rng) for _ in range(200)]
    assert all(0 <= w <= 16 for w in waits)
    assert min(waits) < 4 and max(waits) > 12  # spread over the range, not a constant


def test_retry_after_is_a_floor_with_a_cap_of_its_own():
    assert backoff_seconds(attempt=1, base=2, cap=60, retry_after=30, rng=random.Random(1)) == 30
    # Kombo asking for more than the backoff cap is obeyed...
    assert backoff_seconds(attempt=1, base=2, cap=60, retry_after=900, retry_after_cap=3600,
                           rng=random.Random(1)) == 900
    # ...up to the Retry-After cap.
    assert backoff_seconds(attempt=1, base=2, cap=60, retry_after=86400, retry_after_cap=3600,
                           rng=random.Random(1)) == 3600


def test_concurrency_limit_backs_off_from_one_second_and_remote_errors_wait_longer():
    assert backoff_seconds(attempt=1, base=5, cap=600, code="PLATFORM.CONCURRENCY_LIMIT_EXCEEDED", rng=Fixed()) == 1
    assert backoff_seconds(attempt=1, base=5, cap=600, code="REMOTE.SERVICE_UNAVAILABLE", rng=Fixed()) == 20
