"""Pacing shared by every worker: at most KOMBO_RATE_LIMIT_PER_SECOND requests to Kombo, evenly
spaced, and everyone pauses when Kombo answers 429.

The schedule is GCRA (a token bucket without a refill loop): one Redis key holds the theoretical
time of the next free slot; each request takes the slot and moves it on by 1/rate. A 429 moves it
past Retry-After (or ratelimit-reset), so all workers wait instead of hammering. Redis's own clock
is used, so workers on different machines agree. Without Redis each process paces itself: N
processes would send N times the rate, so a worker refuses to start that way unless DJANGO_DEBUG
is on (the embedded development setup, scripts/run.sh): see `unshared_pacing_problem`.
"""
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings

SLOT_KEY = "kombo:pacing:next-slot"

# KEYS[1] the slot key. ARGV: interval (s), hold (s: push the slot at least this far from now),
# max_wait (s: a slot further away than this is not taken), count (slots wanted, consecutive).
# Returns the waits of the slots taken, in seconds, as strings (Lua numbers lose precision through
# an integer reply); when none is taken, one negative value: how long until one could be had.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local slot = tonumber(redis.call('GET', KEYS[1]) or '0')
local interval = tonumber(ARGV[1])
local hold = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local count = tonumber(ARGV[4])
if hold > 0 then
  slot = math.max(slot, now + hold)
  redis.call('SET', KEYS[1], string.format('%.6f', slot), 'EX', math.ceil(hold) + 60)
  return {'0'}
end
if slot < now then slot = now end
local waits = {}
while #waits < count and slot + #waits * interval - now <= max_wait do
  waits[#waits + 1] = string.format('%.6f', slot + #waits * interval - now)
end
if #waits == 0 then
  return {string.format('%.6f', -(slot - now))}
end
redis.call('SET', KEYS[1], string.format('%.6f', slot + #waits * interval), 'EX', 3600)
return waits
"""


@dataclass(frozen=True)
class Slot:
    wait: float       # seconds until the slot (granted), or until one could be had (not granted)
    granted: bool


def _slots(values):
    values = [float(v) for v in values]
    if len(values) == 1 and values[0] < 0:
        return [Slot(wait=-values[0], granted=False)]
    return [Slot(wait=v, granted=True) for v in values]


class LocalPacer:
    """The same schedule for one process (development without Redis)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._slot = 0.0

    def reserve(self, interval, max_wait=float("inf"), count=1):
        with self._lock:
            now = time.monotonic()
            slot = max(self._slot, now)
            waits = []
            while len(waits) < count and slot + len(waits) * interval - now <= max_wait:
                waits.append(slot + len(waits) * interval - now)
            if not waits:
                return _slots([-(slot - now)])
            self._slot = slot + len(waits) * interval
            return _slots(waits)

    def hold(self, seconds):
        with self._lock:
            self._slot = max(self._slot, time.monotonic() + seconds)


class RedisPacer:
    def __init__(self, url):
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._script = self._client.register_script(_RESERVE)

    def reserve(self, interval, max_wait=1e9, count=1):
        return _slots(self._script(keys=[SLOT_KEY], args=[interval, 0, max_wait, count]))

    def hold(self, seconds):
        self._script(keys=[SLOT_KEY], args=[0, seconds, 0, 1])


_pacer = None
_pacer_key = None


def pacer():
    global _pacer, _pacer_key
    url = settings.KOMBO_PACING_REDIS_URL
    if _pacer is None or _pacer_key != url:
        _pacer = RedisPacer(url) if url else LocalPacer()
        _pacer_key = url
    return _pacer


def reserve_slot(max_wait=float("inf")):
    """A place in the schedule: how long to wait before sending. A slot further away than
    `max_wait` is not taken (the caller comes back later), so refusals never push the
    schedule on. Pacing off: always granted, no wait."""
    return reserve_slots(1, max_wait)[0]


def interval():
    """Seconds between two requests in the schedule (0: pacing off)."""
    rate = settings.KOMBO_RATE_LIMIT_PER_SECOND
    return 1.0 / rate if rate and rate > 0 else 0.0


def reserve_slots(count, max_wait=float("inf")):
    """Up to `count` consecutive places in the schedule, for a batch sent one after another:
    the granted ones, each with its wait from now; or one refused Slot when not even the first
    is within `max_wait`."""
    if not interval():
        return [Slot(0.0, True)] * count
    return pacer().reserve(interval(), max_wait, count)


def observe(*, http_status, retry_after):
    """After a 429, hold every worker back for as long as Kombo asked (at least one second)."""
    if http_status != 429:
        return
    rate = settings.KOMBO_RATE_LIMIT_PER_SECOND
    if not rate or rate <= 0:
        return
    pacer().hold(min(max(retry_after or 1.0, 0.1), settings.KOMBO_RETRY_AFTER_MAX_SECONDS))


def safe_url(url):
    """`url` with its password masked, for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    except ValueError:
        return "<unparsable URL>"


def unshared_pacing_problem(broker_url):
    """Why a worker on `broker_url` must not start with these settings, in one line; None when it
    may. Pacing on and no KOMBO_PACING_REDIS_URL means each worker process paces itself, and N
    processes send N times KOMBO_RATE_LIMIT_PER_SECOND: allowed only with DJANGO_DEBUG on."""
    rate = settings.KOMBO_RATE_LIMIT_PER_SECOND
    if not rate or rate <= 0 or settings.KOMBO_PACING_REDIS_URL or settings.DEBUG:
        return None
    return (
        f"KOMBO_PACING_REDIS_URL is not set: with CELERY_BROKER_URL={safe_url(broker_url)} and "
        f"KOMBO_RATE_LIMIT_PER_SECOND={rate:g} each worker process would pace itself, and N processes "
        f"would send N x {rate:g} requests/s to Kombo; set KOMBO_PACING_REDIS_URL to a Redis URL "
        f"shared by all workers (e.g. redis://HOST:6379/1), or KOMBO_RATE_LIMIT_PER_SECOND=0 to turn "
        f"pacing off."
    )
