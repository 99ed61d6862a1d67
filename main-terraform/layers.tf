# Two layers, in this order on every function: AWS's managed "AWS SDK for pandas" layer, then our own.
# pandas + pyarrow + numpy alone exceed Lambda's 250 MB unzipped limit when installed from PyPI, so they
# come from the managed layer (pinned: one release grew by 37 MB and broke deploys).
# The own layer pins what the code was tested with and must come second: Lambda extracts layers in order
# and a later layer's files win, so its pg8000 (ingest's COPY reader patches 1.31 internals) replaces the
# managed layer's copy, and its boto3/botocore (S3 put_object IfMatch needs a late-2024 botocore; the
# managed layer strips boto3 and the runtime's may be older) shadow the runtime's. It also carries
# aws-lambda-powertools and the RDS CA bundle (certs/). `make layer` builds it into layers/python and
# layers/certs: the packages from layers/requirements.lock (hashes required), the CA bundle checked
# against the sha256 pinned in layers/rds-ca-bundle.sha256.
data "aws_ssm_parameter" "aws_sdk_pandas_layer" {
  count = var.aws_sdk_pandas_layer_arn == "" ? 1 : 0

  # AWS's public parameter for this release, runtime and architecture in the deploy region.
  name = "/aws/service/aws-sdk-pandas/${var.aws_sdk_pandas_version}/${replace(var.python_runtime, "python", "py")}/x86_64/layer-arn"
}

locals {
  # insecure_value: a public ARN, not a secret (value would mark the functions' layers sensitive).
  aws_sdk_pandas_layer_arn = var.aws_sdk_pandas_layer_arn != "" ? var.aws_sdk_pandas_layer_arn : data.aws_ssm_parameter.aws_sdk_pandas_layer[0].insecure_value

  # The Lambda path of a CA bundle shipped in the own layer: /opt/<path> comes from layers/<path>.
  layer_ca_bundles = { for db, path in var.db_ssl_root_cert : db => trimprefix(path, "/opt/") if startswith(path, "/opt/") }
}

data "archive_file" "dependencies_layer" {
  type        = "zip"
  source_dir  = "${path.module}/../layers"
  output_path = "${path.module}/../build/lambda_layer.zip"
  # layers/python/ (Lambda puts /opt/python on sys.path) and layers/certs/ (/opt/certs); run `make layer` first.
  excludes = [
    "requirements.txt",
    "requirements.lock",
    "rds-ca-bundle.sha256",
    "*.zip",
  ]
}

resource "aws_lambda_layer_version" "dependencies" {
  layer_name               = "${var.project}-dependencies"
  description              = "Pinned over the managed pandas layer (comes after it): pg8000 1.31.6, boto3/botocore, powertools, scramp, asn1crypto; RDS CA bundle in /opt/certs"
  filename                 = data.archive_file.dependencies_layer.output_path
  source_code_hash         = data.archive_file.dependencies_layer.output_base64sha256
  compatible_runtimes      = [var.python_runtime]
  compatible_architectures = ["x86_64"]

  lifecycle {
    # verify-full with a bundle the layer does not carry would fail every connection at run time.
    precondition {
      condition     = alltrue([for db, relative in local.layer_ca_bundles : fileexists("${path.module}/../layers/${relative}")])
      error_message = "A CA bundle in db_ssl_root_cert is missing from layers/: run `make layer` (it downloads the RDS global bundle into layers/certs/)."
    }
  }
}
