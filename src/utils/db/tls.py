"""TLS to the databases: which mode a connection uses, and the ``ssl.SSLContext`` pg8000 gets for it.

The contract (docs/DEPLOY.md, "TLS to the databases"): ``<ROLE>_SSLMODE`` (``TOTESYS_SSLMODE``,
``WAREHOUSE_SSLMODE``) is one of ``disable | require | verify-full`` with libpq's meanings, and
``<ROLE>_SSLROOTCERT`` names the PEM bundle ``verify-full`` checks the server's chain against. Unset mode:
``verify-full`` with the system trust store, except for a loopback host (the embedded local cluster),
where it means ``disable``.
"""
from typing import Any, Mapping, Optional, Union
import ipaddress
import ssl
from dataclasses import dataclass

from utils.config import tls_variables
from utils.errors import ConfigError

SSL_MODES = ("disable", "require", "verify-full")
ROLES = ("totesys", "warehouse")
LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class TlsSettings:
    """How one connection is secured: ``mode`` (one of SSL_MODES) and ``root_cert`` (a PEM file path
    for verify-full; None: the system trust store)."""
    mode: str
    root_cert: str | None = None


def is_loopback(host: Any) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if str(host).lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(str(host).strip("[]")).is_loopback
    except ValueError:
        return False


def tls_settings(role: Optional[str], host: Any, environ: Optional[Mapping[str, str]] = None) -> TlsSettings:
    """The TlsSettings of a connection to database ``role`` (``"totesys"``, ``"warehouse"``, or None:
    no variables are read, only the defaults apply) on ``host``; the variables come from ``environ``
    (default ``os.environ``) through ``utils.config.tls_variables``.

    Raises ConfigError naming the variable when ``<ROLE>_SSLMODE`` is not one of SSL_MODES.
    """
    if role is not None and role not in ROLES:
        raise ValueError(f"unknown database role {role!r}; expected one of {', '.join(ROLES)}")
    mode, root_cert = tls_variables(role, environ) if role else ("", None)
    if not mode:
        mode = "disable" if is_loopback(host) else "verify-full"
    if mode not in SSL_MODES:
        raise ConfigError(f"environment variable {str(role).upper()}_SSLMODE must be one of "
                          f"{', '.join(SSL_MODES)}, got {mode!r}")
    return TlsSettings(mode=mode, root_cert=root_cert)


def ssl_context(settings: TlsSettings, where: str) -> Union[bool, ssl.SSLContext]:
    """The ``ssl_context`` argument pg8000 takes for ``settings``: False (disable: plaintext), a context
    that encrypts without verifying (require), or one that requires a certificate chaining to
    ``settings.root_cert`` (or the system trust store) and matching the host name (verify-full).

    Raises ConfigError naming ``where`` (the database, never a password) and the mode when the CA
    bundle cannot be read as PEM certificates.
    """
    if settings.mode == "disable":
        return False
    context = ssl.create_default_context()  # TLS 1.2+, the system trust store loaded
    if settings.mode == "require":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if settings.root_cert:
        try:  # only this bundle is trusted, as libpq's sslrootcert
            context = ssl.create_default_context(cafile=settings.root_cert)
        except FileNotFoundError:
            raise ConfigError(f"{where}: sslmode verify-full: the CA bundle {settings.root_cert} "
                              "does not exist") from None
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(f"{where}: sslmode verify-full: the CA bundle {settings.root_cert} "
                              f"cannot be read as PEM certificates ({type(err).__name__})") from None
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context
