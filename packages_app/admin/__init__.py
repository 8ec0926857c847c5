"""The admin: catalogue, integrations, the publish confirmation page and the read-only ledger.

No business logic here: every change goes through `publishing`, every preview through `selectors`.
Importing this package registers the ModelAdmins.
"""
from .display import cancel_summary, publication_status_text  # noqa: F401
from .integrations import IntegrationAdmin  # noqa: F401
from .packages import AssessmentPackageAdmin  # noqa: F401
from .plans import PlanAdmin  # noqa: F401
from .publications import PublicationAdmin  # noqa: F401
from .webhooks import WebhookEventAdmin  # noqa: F401
