"""The deployed code fits Lambda's 250 MB unzipped limit (function + all layers), measured offline.

Own layer: the exact pinned versions in layers/requirements.txt are installed in this virtualenv (the
runtime requirements pin the same versions) and are pure-Python wheels (py3-none-any), so the files
`make layer` installs for manylinux2014_x86_64 / Python 3.12 are the same files: we sum their sizes from
the installed distributions' RECORD, minus __pycache__ (`make layer` uses --no-compile). When layers/python
has been built, it is measured directly as well and the larger figure counts.
"""
import importlib.metadata
import re
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

from tests.infra.hcl import MAIN, ROOT, SRC, load_stack

LAMBDA_UNZIPPED_LIMIT = 262_144_000  # bytes: "250 MB" as Lambda's error message states it
# AWS SDK for pandas managed layer, unzipped. The largest published measurement is 204 MiB (`du -h`,
# release 3.16.1, aws/aws-sdk-pandas issue #3331, the release whose growth broke deploys; 3.15.1/3.16.0
# measured 167 MiB). The pinned 3.11.0 is smaller (46.7 MB zipped for py3.12 vs 51.3 MB for 3.16.0, per
# the release assets), so 204 MiB is a safe upper bound.
AWS_SDK_PANDAS_LAYER_UNZIPPED = 204 * 1024 * 1024
# Dependencies of the own layer's packages that the managed layer already has: python-dateutil and six
# (pandas needs them), typing_extensions (awswrangler needs it).
PROVIDED_ELSEWHERE = {"python-dateutil", "typing-extensions", "six"}
# What the managed layer is for; the own layer must not ship these (it would break the size budget).
MANAGED_LAYER_PACKAGES = {"pandas", "pyarrow", "numpy"}
# The own layer comes after the managed one, so these pins win over the managed layer's and the runtime's.
OWN_LAYER = {"pg8000", "scramp", "asn1crypto", "aws-lambda-powertools",
             "boto3", "botocore", "s3transfer", "jmespath", "urllib3"}
LAMBDA_ENVIRONMENT = dict(default_environment(), python_version="3.12", python_full_version="3.12.0",
                          sys_platform="linux", platform_system="Linux", platform_machine="x86_64")


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def layer_pins():
    pins = {}
    for line in (ROOT / "layers" / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", f"layer requirement not pinned: {line}"
            pins[canonical(requirement.name)] = spec.version
    return pins


def glob_to_regex(pattern):
    """archive_file's doublestar globs: ** spans folders, * stays within one."""
    out = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
    return re.compile(f"^{out}$")


def function_zip_files():
    archive = load_stack(MAIN)["data"]["archive_file"]["function_code"]
    excludes = [glob_to_regex(pattern) for pattern in archive["excludes"]]
    files = []
    for path in SRC.rglob("*"):
        if path.is_file():
            relative = path.relative_to(SRC).as_posix()
            if not any(regex.match(relative) for regex in excludes):
                files.append(relative)
    return files


def own_layer_bytes_from_installed():
    total = 0
    for name, version in layer_pins().items():
        dist = importlib.metadata.distribution(name)
        assert dist.version == version, f"{name}: venv has {dist.version}, layer pins {version}"
        tags = {line.split(":", 1)[1].strip() for line in dist.read_text("WHEEL").splitlines()
                if line.startswith("Tag:")}
        assert "py3-none-any" in tags, f"{name} is not pure Python: measure a real `make layer` build"
        for file in dist.files:
            if "__pycache__" not in file.parts and file.size:
                total += file.size
    return total


def directory_bytes(path):
    return sum(file.stat().st_size for file in Path(path).rglob("*") if file.is_file())


def test_glob_translation_matches_archive_file_semantics():
    assert glob_to_regex("totesys_local/**").match("totesys_local/cli.py")
    assert glob_to_regex("**/__pycache__/**").match("utils/__pycache__/config.cpython-312.pyc")
    assert glob_to_regex("**/__pycache__/**").match("__pycache__/ingest.cpython-312.pyc")
    assert not glob_to_regex("totesys_local/**").match("utils/config.py")
    assert not glob_to_regex("*.egg-info/**").match("utils/x.py")


def test_function_zip_holds_the_handlers_and_utils_but_not_local_code():
    files = function_zip_files()
    assert {"ingest.py", "utils/config.py"} <= set(files)
    assert not [f for f in files if f.startswith("totesys_local/") or "__pycache__" in f]


def test_own_layer_pins_the_driver_and_the_sdk_the_code_was_tested_with():
    pins = layer_pins()
    assert set(pins) == OWN_LAYER
    assert not (set(pins) & MANAGED_LAYER_PACKAGES)
    # ingest's COPY reader patches pg8000 1.31 internals; the managed layer ships a pg8000 of its own.
    assert pins["pg8000"] == "1.31.6"
    assert pins["boto3"] == pins["botocore"], "boto3 pins botocore to its own release line"
    # `make layer` installs with --no-deps: every dependency must be pinned here or present on Lambda.
    for name in pins:
        for text in importlib.metadata.distribution(name).requires or []:
            requirement = Requirement(text)
            if requirement.marker and not requirement.marker.evaluate(dict(LAMBDA_ENVIRONMENT, extra="")):
                continue
            dependency = canonical(requirement.name)
            assert dependency in pins or dependency in PROVIDED_ELSEWHERE, f"{name} needs {dependency}"


def test_the_pinned_botocore_knows_put_object_if_match():
    # The state pointers' compare-and-swap (put_object IfMatch) needs a late-2024 botocore: the pinned one
    # (installed in this virtualenv at the same version; checked above) must have it in its S3 model.
    import botocore.session
    assert importlib.metadata.version("botocore") == layer_pins()["botocore"]
    put_object = botocore.session.get_session().get_service_model("s3").operation_model("PutObject")
    assert "IfMatch" in put_object.input_shape.members


def test_layer_versions_match_the_runtime_requirements():
    runtime = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            runtime[canonical(requirement.name)] = str(requirement.specifier)
    for name, version in layer_pins().items():
        if name in runtime:
            assert runtime[name] == f"=={version}", name


def test_function_plus_layers_fit_the_unzipped_limit():
    function_bytes = sum((SRC / relative).stat().st_size for relative in function_zip_files())
    own_layer = own_layer_bytes_from_installed()
    built = ROOT / "layers" / "python"
    if built.is_dir():
        own_layer = max(own_layer, directory_bytes(built))
    total = function_bytes + own_layer + AWS_SDK_PANDAS_LAYER_UNZIPPED
    print(f"function {function_bytes:,} B + own layer {own_layer:,} B + managed pandas layer "
          f"{AWS_SDK_PANDAS_LAYER_UNZIPPED:,} B = {total:,} B of {LAMBDA_UNZIPPED_LIMIT:,} B")
    assert own_layer > 1_000_000  # powertools alone is several MB: a zero here means nothing was measured
    assert total < LAMBDA_UNZIPPED_LIMIT
