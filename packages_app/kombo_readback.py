"""Reading what Kombo holds now, for a publish about to be confirmed: each integration's current
package list (`GET /assessment/packages`) and its OPEN orders counted per package
(`GET /assessment/orders`, every page).

Reads only, never a write. Each request goes through the process's Kombo client (its errors and
their classification), takes a slot in the pacing schedule shared with the workers, and uses
short timeouts; a few integrations are read at once, within one overall time budget. Threads
touch no database. Nothing here raises for Kombo's sake: every result says what was read, and in
plain words why the rest was not.
"""
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field, replace

from django.conf import settings
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from . import pacing
from .kombo import ORDERS_PAGE_MAX, KomboError
from .publishing.client import integration_base_url, kombo_client

READ_THREADS = 4          # integrations read at once: a small pool, the pacing sets the rate
ORDER_PAGES_MAX = 40      # 10,000 open orders per integration; past that they are not counted
CONNECT_TIMEOUT_MAX = 2.0


@dataclass
class ReadJob:
    """What to read for one integration (plain values: the threads never touch the database)."""

    key: object                      # the caller's key (the integration's pk)
    integration_id: str              # Kombo's `tool:identifier`
    base_url: str
    sent_ids: frozenset              # package ids the publish would send
    ledger_removed_ids: frozenset    # removals against what we last published (when Kombo is not read)


@dataclass
class Readback:
    """What was read of one integration at Kombo. `packages`/`open_orders` None: not read, and
    `packages_error`/`orders_error` say why. `open_orders` maps package id -> OPEN orders, for
    every package with at least one (read only when the publish removes something)."""

    packages: list | None = None
    packages_error: str | None = None
    open_orders: dict | None = None
    orders_error: str | None = None
    orders_read: bool = False        # orders were asked for (the publish removes something)
    requests: int = 0


class _NotRead(Exception):
    """A read given up before or instead of a request (budget, pacing), in plain words."""


@dataclass
class _Budget:
    deadline: float
    seconds: float
    lock: threading.Lock = field(default_factory=threading.Lock)

    def remaining(self):
        return self.deadline - time.monotonic()

    def spent_message(self):
        return _("Kombo did not answer within the %(seconds)g s this page waits for it.") % {"seconds": self.seconds}


def readback_limit():
    return settings.KOMBO_READBACK_MAX_INTEGRATIONS


def read_job(integration, *, sent_ids, ledger_removed_ids):
    return ReadJob(integration.pk, integration.kombo_integration_id, integration_base_url(integration),
                   frozenset(sent_ids), frozenset(ledger_removed_ids))


def kombo_readbacks(jobs):
    """Read every job's integration at Kombo, a few at a time, within KOMBO_READBACK_BUDGET_SECONDS.
    Returns {job.key: Readback}; what the budget cut short says so."""
    if not jobs:
        return {}
    seconds = settings.KOMBO_READBACK_BUDGET_SECONDS
    budget = _Budget(time.monotonic() + seconds, seconds)
    results = {job.key: Readback() for job in jobs}
    pool = ThreadPoolExecutor(max_workers=min(READ_THREADS, len(jobs)), thread_name_prefix="kombo-readback")
    try:
        futures = [pool.submit(_read_one, job, results[job.key], budget) for job in jobs]
        futures_wait(futures, timeout=max(0.0, budget.remaining()) + 0.2)
    finally:
        # Requests still running end by their own timeouts; their answers are not waited for.
        pool.shutdown(wait=False, cancel_futures=True)
    late = budget.spent_message()
    with budget.lock:  # a snapshot: a late thread must not change what the page shows
        snapshot = {}
        for key, result in results.items():
            result = replace(result, open_orders=dict(result.open_orders) if result.open_orders is not None else None)
            if result.packages is None and result.packages_error is None:
                result.packages_error = late
            if result.orders_read and result.open_orders is None and result.orders_error is None:
                result.orders_error = late
            snapshot[key] = result
    return snapshot


def open_order_counts(*, integration_id, base_url, budget_seconds=None):
    """OPEN orders per package id of one integration (every page), for callers outside the
    confirmation page (e.g. a warning before a published package id changes): (counts, None), or
    (None, why they could not be read)."""
    seconds = budget_seconds or settings.KOMBO_READBACK_BUDGET_SECONDS
    budget = _Budget(time.monotonic() + seconds, seconds)
    result = Readback(orders_read=True)
    try:
        counts = _count_open_orders(integration_id, base_url, budget, result)
    except (KomboError, _NotRead) as exc:
        return None, str(exc)
    return counts, None


def _read_one(job, result, budget):
    try:
        packages = _paced(budget, result, lambda timeout: kombo_client().get_packages(
            base_url=job.base_url, integration_id=job.integration_id, timeout=timeout))
    except (KomboError, _NotRead) as exc:
        with budget.lock:
            result.packages_error = str(exc)
        removed = job.ledger_removed_ids
    else:
        with budget.lock:
            result.packages = packages
        removed = {str(p.get("id")) for p in packages} - job.sent_ids
    if not removed:
        return
    with budget.lock:
        result.orders_read = True
    try:
        counts = _count_open_orders(job.integration_id, job.base_url, budget, result)
    except (KomboError, _NotRead) as exc:
        with budget.lock:
            result.orders_error = str(exc)
    else:
        with budget.lock:
            result.open_orders = counts


def _count_open_orders(integration_id, base_url, budget, result):
    counts, cursor, seen = {}, None, set()
    for _page in range(ORDER_PAGES_MAX):
        page = _paced(budget, result, lambda timeout, cursor=cursor: kombo_client().list_orders(
            base_url=base_url, integration_id=integration_id, statuses=("OPEN",),
            page_size=ORDERS_PAGE_MAX, cursor=cursor, timeout=timeout))
        for order in page.results:
            if order.get("status", "OPEN") == "OPEN" and order.get("package_id") is not None:
                package_id = str(order["package_id"])
                counts[package_id] = counts.get(package_id, 0) + 1
        if page.next is None:
            return counts
        if page.next in seen:
            raise _NotRead(_("Kombo's pages of orders repeat (the same “next” cursor twice)."))
        seen.add(page.next)
        cursor = page.next
    raise _NotRead(ngettext(
        "There are more than %(count)s open order; they were not counted further.",
        "There are more than %(count)s open orders; they were not counted further.",
        ORDER_PAGES_MAX * ORDERS_PAGE_MAX) % {"count": f"{ORDER_PAGES_MAX * ORDERS_PAGE_MAX:,}"})


def _paced(budget, result, call):
    """One request in its place in the shared schedule, with a timeout that fits the budget."""
    remaining = budget.remaining()
    if remaining <= 0.05:
        raise _NotRead(budget.spent_message())
    slot = pacing.reserve_slot(max_wait=remaining)
    if not slot.granted:
        raise _NotRead(_("The requests to Kombo are taken by publishes right now (the next free "
                         "slot is in %(wait).0f s).") % {"wait": slot.wait})
    if slot.wait > 0:
        time.sleep(slot.wait)
    remaining = budget.remaining()
    if remaining <= 0.05:
        raise _NotRead(budget.spent_message())
    read = min(settings.KOMBO_READBACK_TIMEOUT_SECONDS, remaining)
    timeout = (min(CONNECT_TIMEOUT_MAX, read), read)
    with budget.lock:
        result.requests += 1
    try:
        return call(timeout)
    except KomboError as error:
        # A 429 holds every worker back as long as Kombo asked, as a publish's would.
        pacing.observe(http_status=error.http_status, retry_after=error.retry_after)
        if error.http_status is None and read < settings.KOMBO_READBACK_TIMEOUT_SECONDS \
                and budget.remaining() <= 0.05:
            # The timeout was the rest of the budget: say that, not a timeout of odd seconds.
            raise _NotRead(budget.spent_message()) from None
        raise
