"""Supply chain of the deploy: pinned workflow actions, the own layer installed only from locked hashes,
and the RDS CA bundle checked against a pinned checksum (tools/layer_lock.py, tools/rds_ca_pin.py)."""
import datetime
import hashlib
import re
import subprocess
import sys
import zipfile

import pytest
import yaml

from tests.infra.hcl import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import layer_lock  # noqa: E402
import rds_ca_pin  # noqa: E402

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
RDS = (rds_ca_pin.RDS_ORGANIZATION, rds_ca_pin.RDS_UNIT)
USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$")


def test_every_workflow_action_is_pinned_to_a_commit_sha_with_its_release_noted():
    uses = [(path.name, match.group(1), match.group(2)) for path in WORKFLOWS
            for match in map(USES.match, path.read_text().splitlines()) if match]
    assert uses, "no action found: the pattern is broken"
    for workflow, action, comment in uses:
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", action), (workflow, action)
        assert re.fullmatch(r"\s+# v\d+(\.\d+)*", comment), (workflow, action, "release comment")


def test_dependabot_proposes_action_updates():
    config = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())
    ecosystems = {update["package-ecosystem"] for update in config["updates"]}
    assert {"github-actions", "pip", "terraform"} <= ecosystems


# -- the own layer: pip --require-hashes from the lock ---------------------------------------------------

def _requirement_pins(path):
    return layer_lock.pins(path.read_text())


def _lock_entries(text):
    """{name==version: [hashes]} of a lock file."""
    entries = {}
    for block in re.split(r"\n(?=[A-Za-z])", re.sub(r"(?m)^#.*\n", "", text).strip()):
        lines = [line.strip(" \\") for line in block.splitlines()]
        entries[lines[0]] = [line.removeprefix("--hash=sha256:") for line in lines[1:]]
    return entries


def test_the_lock_holds_exactly_the_layer_pins_each_with_a_wheel_hash():
    pins = [f"{name}=={version}" for name, version in _requirement_pins(ROOT / "layers" / "requirements.txt")]
    entries = _lock_entries((ROOT / "layers" / "requirements.lock").read_text())
    assert list(entries) == pins, "run `make layer-lock` after changing layers/requirements.txt"
    for hashes in entries.values():
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in hashes)


def test_make_layer_installs_only_locked_hashes_and_checks_the_ca_bundle():
    out = subprocess.run(["make", "-n", "layer"], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin:/usr/local/bin"}).stdout
    install = next(line for line in out.replace("\\\n", " ").splitlines() if "pip install" in line)
    assert "--require-hashes" in install and "-r layers/requirements.lock" in install
    assert "requirements.txt" not in install
    assert out.index("curl") < out.index("tools/rds_ca_pin.py check layers/certs/rds-global-bundle.pem "
                                         "layers/rds-ca-bundle.sha256")


WHEEL_FILE = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def _wheel(directory, name, version, payload=b"VALUE = 1\n"):
    """A minimal pure-Python wheel of ``name`` ``version`` holding one module."""
    path = directory / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {f"{name}.py": payload,
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{info}/WHEEL": WHEEL_FILE}
    with zipfile.ZipFile(path, "w") as archive:
        for file_name, data in files.items():
            archive.writestr(file_name, data)
        archive.writestr(f"{info}/RECORD", "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n")
    return path


def _pip_install(lock, wheels, target):
    return subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                           "--isolated", "--require-hashes", "--find-links", str(wheels), "--target",
                           str(target), "-r", str(lock)], capture_output=True, text=True)


def test_a_locked_wheel_installs_and_a_wheel_with_other_bytes_is_refused(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "lockedpkg", "1.0")
    lock = tmp_path / "requirements.lock"
    lock.write_text(layer_lock.lock("lockedpkg==1.0  # the one pin\n", wheels))
    assert _pip_install(lock, wheels, tmp_path / "good").returncode == 0
    assert (tmp_path / "good" / "lockedpkg.py").exists()

    _wheel(wheels, "lockedpkg", "1.0", payload=b"VALUE = 'tampered'\n")  # same name, other bytes
    refused = _pip_install(lock, wheels, tmp_path / "bad")
    assert refused.returncode != 0 and "DO NOT MATCH THE HASHES" in refused.stderr
    assert not (tmp_path / "bad" / "lockedpkg.py").exists()


def test_the_lock_tool_refuses_a_loose_pin_or_a_missing_wheel(tmp_path):
    with pytest.raises(ValueError, match="not an exact pin"):
        layer_lock.lock("boto3>=1.40\n", tmp_path)
    with pytest.raises(ValueError, match="no wheel of pg8000==1.31.6"):
        layer_lock.lock("pg8000==1.31.6\n", tmp_path)
    _wheel(tmp_path, "aws_lambda_powertools", "3.37.0")
    text = layer_lock.lock("aws-lambda-powertools==3.37.0\n", tmp_path)
    digest = hashlib.sha256((tmp_path / "aws_lambda_powertools-3.37.0-py3-none-any.whl").read_bytes())
    assert f"aws-lambda-powertools==3.37.0 \\\n    --hash=sha256:{digest.hexdigest()}\n" in text


# -- the RDS CA bundle: a pinned checksum, a reviewed pin step ----------------------------------------------

def _certificate(common_name, organization, unit, issuer=None, ca=True):
    """(certificate, key): self-signed, or signed by ``issuer`` = (certificate, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    issuer_name, signing_key = (issuer[0].subject, issuer[1]) if issuer else (name, key)
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                   .sign(signing_key, hashes.SHA256()))
    return certificate, key


def _pem(*certificates):
    from cryptography.hazmat.primitives.serialization import Encoding
    return b"".join(certificate.public_bytes(Encoding.PEM) for certificate, _ in certificates)


@pytest.fixture
def rds_bundle(tmp_path):
    root = _certificate("Amazon RDS eu-west-2 Root CA RSA2048 G1", *RDS)
    intermediate = _certificate("Amazon RDS eu-west-2 Subordinate CA", *RDS, issuer=root)
    path = tmp_path / "rds-global-bundle.pem"
    path.write_bytes(_pem(root, intermediate))
    return path, root


def _check_in_a_bare_python(bundle, pin):
    """`make layer`'s check, in a Python with no site-packages (the layer target's bare virtualenv)."""
    return subprocess.run([sys.executable, "-S", "-I", str(ROOT / "tools" / "rds_ca_pin.py"), "check",
                           str(bundle), str(pin)], capture_output=True, text=True)


def test_a_pinned_bundle_passes_and_any_other_bytes_stop_the_build(rds_bundle, tmp_path):
    bundle, root = rds_bundle
    pin = tmp_path / "rds-ca-bundle.sha256"
    listed = rds_ca_pin.pin(bundle, pin)
    assert [line.split("  ")[0] for line in listed] == ["Amazon RDS eu-west-2 Root CA RSA2048 G1",
                                                        "Amazon RDS eu-west-2 Subordinate CA"]
    checked = subprocess.run(["sha256sum", "--check", "--strict", "--quiet", pin.name], cwd=tmp_path)
    assert checked.returncode == 0, "the pin file is in sha256sum's format"
    assert _check_in_a_bare_python(bundle, pin).returncode == 0

    bundle.write_bytes(bundle.read_bytes() + _pem(_certificate("Amazon RDS extra", *RDS, issuer=root)))
    changed = _check_in_a_bare_python(bundle, pin)
    assert changed.returncode == 1 and "make rds-ca-pin" in changed.stderr and "pinned" in changed.stderr


def test_no_pin_or_no_pem_stops_the_build(rds_bundle, tmp_path):
    bundle, _ = rds_bundle
    missing = _check_in_a_bare_python(bundle, tmp_path / "absent.sha256")
    assert missing.returncode == 1 and "is missing: run `make rds-ca-pin`" in missing.stderr
    html = tmp_path / "error.html"
    html.write_text("<html>403</html>")
    with pytest.raises(rds_ca_pin.PinError, match="not a PEM certificate bundle"):
        rds_ca_pin.check(html, tmp_path / "absent.sha256")


@pytest.mark.parametrize("owner, ca, external_issuer, reason", [
    (("Evil Corp", "Amazon RDS"), True, False, "is not an Amazon RDS certificate"),
    (RDS, False, False, "is not a certificate authority"),
    (RDS, True, True, "issued by a certificate outside"),
])
def test_the_pin_step_refuses_a_bundle_that_is_not_only_rds_authorities(
        rds_bundle, tmp_path, owner, ca, external_issuer, reason):
    bundle, root = rds_bundle
    issuer = _certificate("Somebody's CA", *owner) if external_issuer else root
    odd = _certificate("Amazon RDS odd one", *owner, issuer=issuer, ca=ca)
    bundle.write_bytes(bundle.read_bytes() + _pem(odd))
    pin = tmp_path / "rds-ca-bundle.sha256"
    with pytest.raises(rds_ca_pin.PinError, match=reason):
        rds_ca_pin.pin(bundle, pin)
    assert not pin.exists()
