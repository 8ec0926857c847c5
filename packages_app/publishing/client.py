"""The worker's connection to Kombo: one client per process, the base URL of an integration, and
what may be shown or logged of the API key."""
import os

from django.conf import settings

from .. import kombo

_client = None
_client_pid = None


def kombo_client():
    """One client (one requests.Session, one connection pool) per worker process."""
    global _client, _client_pid
    if _client is None or _client_pid != os.getpid():
        _client = kombo.KomboClient(
            api_key=settings.KOMBO_API_KEY,
            connect_timeout=settings.KOMBO_CONNECT_TIMEOUT,
            read_timeout=settings.KOMBO_READ_TIMEOUT,
        )
        _client_pid = os.getpid()
    return _client


def forget_client():
    """Build the next client from the settings as they are then (tests change them)."""
    global _client
    _client = None


def integration_base_url(integration):
    return integration_base_url_for(integration.region)


def integration_base_url_for(region):
    """KOMBO_API_URL if set (the sandbox), else the URL of the region's Kombo account."""
    return settings.KOMBO_API_URL or settings.KOMBO_REGION_URLS[region]


def api_key_status():
    """What the admin may show of the key: whether it is set, and its last four characters."""
    key = settings.KOMBO_API_KEY
    if not key:
        return "not configured"
    return f"configured, ending in …{key[-4:]}" if len(key) >= 12 else "configured"


def redact_key(text):
    """Text safe to log: the API key, if it appears, replaced."""
    key = settings.KOMBO_API_KEY
    return text.replace(key, "[KOMBO_API_KEY]") if key else text
