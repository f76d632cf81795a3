"""API tokens and where a server may listen without them. Imports no Flask (the worker uses it too)."""
import hmac
import ipaddress
import logging

from service.config import ConfigError

log = logging.getLogger(__name__)


def token_matches(given, tokens):
    """Compare given with every token in constant time (no early exit on the first match)."""
    given = (given or "").encode()
    found = False
    for token in tokens:
        found |= hmac.compare_digest(given, token.encode())
    return found and bool(given)


LOOPBACK_NAMES = ("localhost",)


def is_loopback(host):
    """True if host only accepts connections from this machine."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_secret(settings):
    """Refuse (ConfigError) API_TOKENS without a SECRET_KEY to sign the dashboard's session."""
    if settings["API_TOKENS"] and not settings.get("SECRET_KEY"):
        raise ConfigError("SECRET_KEY is required when API_TOKENS is set (it signs the dashboard's session)")


def check_listening(settings):
    """Refuse (ConfigError) settings a server must not start with.

    A SECRET_KEY goes with API_TOKENS, and a HOST other machines can reach
    needs API_TOKENS unless ALLOW_UNAUTHENTICATED says to serve it open.
    """
    require_secret(settings)
    host = settings["HOST"]
    if is_loopback(host) or settings["API_TOKENS"]:
        return
    if not settings["ALLOW_UNAUTHENTICATED"]:
        raise ConfigError(f"HOST={host} is reachable from other machines and API_TOKENS is not set: "
                          "set API_TOKENS and SECRET_KEY, or ALLOW_UNAUTHENTICATED=true to serve it open")
    log.warning("serving HOST=%s WITHOUT authentication (ALLOW_UNAUTHENTICATED=true): "
                "anyone who reaches the port can submit and cancel tasks", host)
