"""Access control: bearer tokens for the API and /metrics, a signed session for the dashboard.

With API_TOKENS unset every route is open (the server then listens on
loopback only, see check_listening). With it set, every route needs
`Authorization: Bearer <token>` or the dashboard's session cookie, except the
probes (/healthz, /readyz), the sign-in page, static files and the redirect
at /, which hold no task or user data; a request that rides on the cookie and changes something
must also carry the session's CSRF token, so another site cannot make the
browser act.
"""
import hmac
import secrets

from flask import current_app, has_request_context, redirect, request, session, url_for

from service.errors import error_response
from service.tokens import require_secret, token_matches

# Open with API_TOKENS set: they hold no task or user data ("/" only redirects to the dashboard).
OPEN_PATHS = frozenset({"/", "/healthz", "/readyz", "/dashboard/signin", "/favicon.ico"})
OPEN_PREFIXES = ("/dashboard/static/", "/docs/assets/")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
CSRF_HEADER = "X-CSRF-Token"


def init_auth(app):
    """Require a token on the protected routes when API_TOKENS is set."""
    require_secret(app.config)
    tokens = app.config["API_TOKENS"]
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict")
    app.jinja_env.globals.update(csrf_token=csrf_token, signed_in=lambda: bool(session.get("signed_in")))
    if tokens:
        app.before_request(lambda: require_token(tokens))


def bearer_token():
    """The token of an `Authorization: Bearer ...` header, or None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def require_token(tokens):
    """before_request: let through open routes, valid tokens and signed-in sessions (with CSRF)."""
    if request.path in OPEN_PATHS or request.path.startswith(OPEN_PREFIXES):
        return None
    given = bearer_token()
    if given is not None:
        if token_matches(given, tokens):
            return None
        return refuse("wrong token")
    if session.get("signed_in"):
        if request.method in SAFE_METHODS or csrf_valid():
            return None
        return error_response(403, "missing or wrong CSRF token", {"headers": {CSRF_HEADER: ["required"]}})
    return refuse("missing token")


def refuse(reason):
    """401 in JSON for the API, the article's routes and /metrics; the sign-in page for pages."""
    if _is_page(request.path) and request.method in SAFE_METHODS:
        return redirect(url_for("dashboard.sign_in", next=request.full_path.rstrip("?")))
    return error_response(401, f"authentication required: {reason}; send Authorization: Bearer <token>",
                          headers={"WWW-Authenticate": 'Bearer realm="tasks"'})


def _is_page(path):
    """A page a person opens in a browser (not the API, /user/*, /metrics or /openapi.json)."""
    return path in ("/", "/docs") or path.startswith("/dashboard")


def csrf_token():
    """This session's CSRF token (made on first use); empty without a SECRET_KEY."""
    if not has_request_context() or not current_app.secret_key:
        return ""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def csrf_valid():
    """True when the request carries the session's CSRF token in the header or the form."""
    expected = session.get("csrf", "")
    given = request.headers.get(CSRF_HEADER) or request.form.get("csrf_token", "")
    return bool(expected) and hmac.compare_digest(expected.encode(), given.encode())


def sign_in(token, tokens):
    """Start a signed-in session if token is one of tokens; True on success."""
    if not token_matches(token, tokens):
        return False
    session.clear()
    session["signed_in"] = True
    session["csrf"] = secrets.token_urlsafe(32)
    return True


def sign_out():
    """End the session."""
    session.clear()
