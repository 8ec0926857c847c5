"""The publishing engine: every state change of a Publication, each written once.

    planning.py      what a publish would send (plans) and creating publications (-> queued)
    queueing.py      handing publications to the broker, by task name
    taking.py        the take: rows locked, decided, leased and marked sending (-> sending)
    transitions.py   every way out of sending, and ending without a request (superseded,
                     cancelled, failed), each a guarded UPDATE (guards.py)
    outcomes.py      pure: what an answer makes of a publication
    execution.py     one path for one publication or a batch: take, pace, send, record, hand back
    leases.py        the integration lease (one request per integration in flight)
    cancelling.py    staff's cancel and pausing an integration
    sweep.py         queueing again what is stuck
    client.py        the Kombo client of this process

Callers (admin, management commands, tasks) use the names below; the invariants are DESIGN.md
section 4.
"""
from .cancelling import integration_publications_cancel, integrations_pause, publications_cancel
from .client import api_key_status, integration_base_url, kombo_client, redact_key
from .execution import ExecuteResult, publication_execute, publications_execute
from .planning import (CatalogueChanged, IntegrationPaused, PlannedPublication, publication_plan,
                       publication_plans, publications_create)
from .queueing import message_sizes, publication_enqueue, publications_enqueue
from .retention import publications_prune
from .sweep import publications_sweep

__all__ = [
    "CatalogueChanged", "ExecuteResult", "IntegrationPaused", "PlannedPublication", "api_key_status",
    "integration_base_url", "integration_publications_cancel", "integrations_pause", "kombo_client",
    "message_sizes", "publication_enqueue", "publication_execute", "publication_plan", "publication_plans",
    "publications_cancel", "publications_create", "publications_enqueue", "publications_execute",
    "publications_prune", "publications_sweep", "redact_key",
]
