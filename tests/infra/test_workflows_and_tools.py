"""CI/CD workflow shape, the Makefile's deploy path, and the ASL renderer used by `make statelint`."""
import json
import subprocess
import sys

import pytest
import yaml

from tests.infra.hcl import ASL_TEMPLATE, ROOT

sys.path.insert(0, str(ROOT / "tools"))
import render_asl  # noqa: E402


@pytest.fixture(scope="module")
def workflow():
    return yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())


def run_names(job):
    return [step.get("run", "") for step in job["steps"]]


def test_tests_run_on_pull_requests_and_pushes(workflow):
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as True
    assert "pull_request" in triggers and "push" in triggers
    # .ci/run is make test followed by the README's main path: GitHub runs what our CI runs.
    assert any(run.strip() == "bash .ci/run" for run in run_names(workflow["jobs"]["test"]))
    ci_run = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci_run and ci_run.index("make test") < ci_run.index("make run")


def test_deploy_runs_on_main_after_tests_with_oidc_and_no_keys(workflow):
    deploy = workflow["jobs"]["deploy"]
    assert deploy["needs"] == "test"
    assert "refs/heads/main" in deploy["if"]
    assert deploy["permissions"]["id-token"] == "write"
    action = "aws-actions/configure-aws-credentials"
    (credentials,) = [s for s in deploy["steps"] if s.get("uses", "").startswith(action)]
    assert "role-to-assume" in credentials["with"]
    assert not {"aws-access-key-id", "aws-secret-access-key"} & set(credentials["with"])
    runs = run_names(deploy)
    order = [next(i for i, run in enumerate(runs) if needle in run) for needle in (
        "make layer", "terraform fmt -check",
        "-chdir=immutable-terraform init", "-chdir=immutable-terraform validate",
        "-chdir=immutable-terraform plan", "-chdir=immutable-terraform apply",
        "-chdir=main-terraform init", "-chdir=main-terraform validate",
        "-chdir=main-terraform plan", "-chdir=main-terraform apply")]
    assert order == sorted(order), "deploy steps out of order"


def test_credential_files_come_from_secrets_via_environment(workflow):
    deploy = workflow["jobs"]["deploy"]
    (write,) = [s for s in deploy["steps"] if "db_credentials.json" in s.get("run", "") and "env" in s]
    assert all(value.startswith("${{ secrets.") for value in write["env"].values())
    assert "${{" not in write["run"]  # never interpolated into the script


def dry_run(*targets, **env):
    result = subprocess.run(["make", "-n", *targets], cwd=ROOT, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin:/usr/local/bin", **env}, check=True)
    return result.stdout


def test_make_deploy_builds_the_layer_then_applies_immutable_then_main():
    out = dry_run("deploy", TF_STATE_BUCKET="state-bucket")
    positions = [out.index(needle) for needle in (
        "--target layers/python", "-chdir=immutable-terraform init", "-chdir=main-terraform init",
        "-chdir=immutable-terraform apply", "-chdir=main-terraform apply")]
    assert positions == sorted(positions)
    assert '-backend-config="bucket=state-bucket"' in out
    assert "--platform manylinux2014_x86_64" in out and "--python-version 3.12" in out


def test_make_destroy_keeps_the_immutable_stack_unless_asked():
    out = dry_run("destroy", TF_STATE_BUCKET="state-bucket")
    assert "-chdir=main-terraform destroy" in out
    assert "immutable-terraform destroy" not in out
    out = dry_run("destroy", TF_STATE_BUCKET="state-bucket", DESTROY_IMMUTABLE="1")
    assert out.index("-chdir=main-terraform destroy") < out.index("-chdir=immutable-terraform destroy")


def test_deploy_doc_matches_the_makefile():
    doc = (ROOT / "README.md").read_text()
    for needle in ("make layer", "make deploy", "make destroy", "DESTROY_IMMUTABLE=1", "TF_STATE_BUCKET",
                   "db_credentials.json", "warehouse_credentials.json", "email.txt",
                   "AWSSDKPandas-Python312", "AWS_DEPLOY_ROLE_ARN"):
        assert needle in doc, needle


def test_render_substitutes_every_placeholder_of_the_template():
    template = ASL_TEMPLATE.read_text()
    assert render_asl.placeholders(template) == set(render_asl.DUMMY_VALUES)
    rendered = json.loads(render_asl.render(template))
    assert "${" not in json.dumps(rendered)
    assert rendered["States"]["Ingest"]["Parameters"]["FunctionName"].endswith(":function:totesys-ingest")


def test_template_has_no_terraform_template_syntax_but_its_placeholders():
    # templatefile() reads "$${" as an escaped "${" and "%{" as a directive; our renderer (the local runner,
    # moto, statelint) substitutes plain ${name} only. Without those sequences both give the same definition.
    template = ASL_TEMPLATE.read_text()
    assert "$${" not in template and "%{" not in template
    assert template.count("${") == sum(template.count("${" + name + "}") for name in render_asl.DUMMY_VALUES)


def test_render_refuses_an_unknown_placeholder(tmp_path):
    with pytest.raises(KeyError, match="no value for placeholder.*: mystery_arn"):
        render_asl.render('{"Resource": "${mystery_arn}"}')
    source, target = tmp_path / "in.json", tmp_path / "out.json"
    source.write_text('{"Resource": "${mystery_arn}"}')
    assert render_asl.main(["render_asl.py", str(source), str(target)]) == 1
    assert not target.exists()
