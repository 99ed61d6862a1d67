# Two layers. pandas + pyarrow + numpy alone exceed Lambda's 250 MB unzipped limit when installed from
# PyPI, so they come from AWS's managed "AWS SDK for pandas" layer (pinned: one release grew by 37 MB and
# broke deploys). What it lacks (pg8000 and its SCRAM dependencies, aws-lambda-powertools) is our own small
# layer, built by `make layer` into layers/python from layers/requirements.txt.
locals {
  aws_sdk_pandas_layer_arn = "arn:${local.partition}:lambda:${var.region}:336392948345:layer:AWSSDKPandas-Python312:${var.aws_sdk_pandas_layer_version}"
}

data "archive_file" "dependencies_layer" {
  type        = "zip"
  source_dir  = "${path.module}/../layers"
  output_path = "${path.module}/../build/lambda_layer.zip"
  # Only layers/python/ goes in (Lambda puts /opt/python on sys.path); run `make layer` first.
  excludes = [
    "requirements.txt",
    "*.zip",
  ]
}

resource "aws_lambda_layer_version" "dependencies" {
  layer_name               = "${var.project}-dependencies"
  description              = "pg8000, scramp, asn1crypto, aws-lambda-powertools (layers/requirements.txt)"
  filename                 = data.archive_file.dependencies_layer.output_path
  source_code_hash         = data.archive_file.dependencies_layer.output_base64sha256
  compatible_runtimes      = [var.python_runtime]
  compatible_architectures = ["x86_64"]
}
