"""CDC test helpers (no tests)."""
from urllib.parse import quote, urlsplit, urlunsplit


def url_as(url, user, password):
    """``url`` with another user and password."""
    parts = urlsplit(url)
    netloc = f"{quote(user)}:{quote(password)}@{parts.hostname}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
