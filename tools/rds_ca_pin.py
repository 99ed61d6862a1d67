"""Pin and check the RDS CA bundle that `make layer` ships in the own layer (layers/certs/ -> /opt/certs/).

AWS publishes the bundle (https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem) but no
checksum of it, and changes it when it adds a region or a CA. So the checksum is pinned here, in a
reviewed commit, and every build checks the download against it:

    python tools/rds_ca_pin.py check BUNDLE PIN_FILE   # `make layer`: exit 1 unless BUNDLE matches the pin
    python tools/rds_ca_pin.py pin BUNDLE PIN_FILE     # `make rds-ca-pin`: inspect BUNDLE, then write the pin

``check`` uses the standard library only (`make layer` runs in a bare virtualenv). ``pin`` refuses a
bundle holding anything but certificate authorities of Amazon RDS (subject O = "Amazon Web Services,
Inc.", OU = "Amazon RDS", a CA, issued by a certificate of the bundle) and prints each one, for the
reviewer of the commit that changes the pin. PIN_FILE is in `sha256sum` format (`sha256sum -c` reads it).
"""
import hashlib
import re
import sys
from pathlib import Path

PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.+?-----END CERTIFICATE-----", re.DOTALL)
RDS_ORGANIZATION = "Amazon Web Services, Inc."
RDS_UNIT = "Amazon RDS"


class PinError(Exception):
    """The bundle is not what the pin (or a reviewer) accepts; the message says why."""


def digest(bundle):
    return hashlib.sha256(Path(bundle).read_bytes()).hexdigest()


def pem_blocks(data):
    """The PEM certificate blocks of ``data``; PinError when there is none."""
    blocks = PEM_BLOCK.findall(data)
    if not blocks:
        raise PinError("not a PEM certificate bundle")
    return blocks


def pinned_digest(pin_file):
    """The sha256 the pin file records; PinError when it is missing or malformed."""
    path = Path(pin_file)
    if not path.is_file():
        raise PinError(f"{path} is missing: run `make rds-ca-pin` (needs network), review what it prints, "
                       "and commit the file")
    match = re.fullmatch(r"([0-9a-f]{64})  \S+\n?", path.read_text())
    if not match:
        raise PinError(f"{path} is not one `sha256sum` line (<64 hex digits>  <file>)")
    return match.group(1)


def check(bundle, pin_file):
    """PinError unless ``bundle`` is a PEM bundle whose sha256 is the pinned one."""
    pem_blocks(Path(bundle).read_bytes())
    expected, found = pinned_digest(pin_file), digest(bundle)
    if found != expected:
        raise PinError(f"{bundle}: sha256 {found}, pinned {expected} ({pin_file}). AWS changes the bundle "
                       "when it adds a region or a CA: run `make rds-ca-pin`, review what it prints, and "
                       "commit the new pin; anything else means the download is not AWS's bundle")


def _name(name, oid):
    values = name.get_attributes_for_oid(oid)
    return values[0].value if values else None


def inspect(bundle):
    """One line per certificate of ``bundle`` (subject CN, expiry); PinError when one is not an Amazon
    RDS certificate authority or is issued by a certificate outside the bundle."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    certificates = [x509.load_pem_x509_certificate(block) for block in pem_blocks(Path(bundle).read_bytes())]
    subjects = {certificate.subject for certificate in certificates}
    lines = []
    for certificate in certificates:
        subject = certificate.subject
        common_name = _name(subject, NameOID.COMMON_NAME)
        owner = (_name(subject, NameOID.ORGANIZATION_NAME), _name(subject, NameOID.ORGANIZATIONAL_UNIT_NAME))
        if owner != (RDS_ORGANIZATION, RDS_UNIT):
            raise PinError(f"{common_name!r} is not an Amazon RDS certificate (O, OU = {owner})")
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
        if not constraints.ca:
            raise PinError(f"{common_name!r} is not a certificate authority")
        if certificate.issuer not in subjects:
            raise PinError(f"{common_name!r} is issued by a certificate outside the bundle")
        lines.append(f"{common_name}  (until {certificate.not_valid_after_utc:%Y-%m-%d})")
    return lines


def pin(bundle, pin_file):
    """Inspect ``bundle`` and write its sha256 to ``pin_file``; return the inspection's lines."""
    lines = inspect(bundle)
    Path(pin_file).write_text(f"{digest(bundle)}  {Path(bundle).as_posix()}\n")
    return lines


def main(argv):
    if len(argv) != 4 or argv[1] not in ("check", "pin"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    command, bundle, pin_file = argv[1:]
    try:
        if command == "check":
            check(bundle, pin_file)
            print(f"{bundle}: sha256 matches {pin_file}")
        else:
            for line in pin(bundle, pin_file):
                print(line)
            print(f"{pin_file}: sha256 of these certificates; review them, then commit it")
    except (PinError, OSError, ValueError) as err:
        print(f"rds CA bundle: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
