# The three stages: one function each, the same code zip (src/ is one import root), different handlers.
locals {
  functions = {
    ingest    = { handler = "ingest.lambda_handler", description = "totesys -> Parquet in the ingest bucket" }
    transform = { handler = "transform.lambda_handler", description = "ingest bucket -> star-schema Parquet in the processed bucket" }
    load      = { handler = "load.lambda_handler", description = "processed bucket -> warehouse" }
  }

  function_names = { for stage in keys(local.functions) : stage => "${var.project}-${stage}" }

  # Every variable utils/config.py and utils/logger.py read. Names, not values: the credentials stay in
  # Secrets Manager and are fetched at run time.
  function_environment = {
    INGEST_BUCKET               = local.ingest_bucket_name
    PROCESSED_BUCKET            = local.processed_bucket_name
    TOTESYS_SECRET_ID           = local.totesys_secret_name
    WAREHOUSE_SECRET_ID         = local.warehouse_secret_name
    INGEST_OVERLAP_SECONDS      = tostring(var.ingest_overlap_seconds)
    INGEST_PARALLEL_CONNECTIONS = tostring(var.ingest_parallel_connections)
    MAX_BATCH_ROWS              = tostring(var.max_batch_rows)
    MAX_DELETE_FRACTION         = tostring(var.max_delete_fraction)
    # The load keeps its warehouse connection across warm invocations for this long (utils/db/kept.py).
    WAREHOUSE_KEEP_CONNECTION_SECONDS = tostring(var.warehouse_keep_connection_seconds)
    # Rows stamped further ahead of the source clock are quarantined (utils/ingest/backdated.py).
    INGEST_FUTURE_TOLERANCE_SECONDS = tostring(var.ingest_future_tolerance_seconds)
    LOG_LEVEL                       = var.log_level
    TOTESYS_PER_TABLE_METRICS       = var.per_table_row_metrics ? "true" : "false"
    POWERTOOLS_SERVICE_NAME         = var.project
    # TLS to the databases (docs/DEPLOY.md, "TLS to the databases"): libpq's sslmode values.
    TOTESYS_SSLMODE       = var.db_ssl_mode["totesys"]
    TOTESYS_SSLROOTCERT   = var.db_ssl_root_cert["totesys"]
    WAREHOUSE_SSLMODE     = var.db_ssl_mode["warehouse"]
    WAREHOUSE_SSLROOTCERT = var.db_ssl_root_cert["warehouse"]

    # cursor or cdc (utils/ingest/cdc: a logical replication slot on totesys, named CDC_SLOT_NAME).
    INGEST_MODE   = var.ingest_mode
    CDC_SLOT_NAME = var.cdc_slot_name
  }
}

# src/ zipped as is, minus the local-only package (cluster, generator, CLI) and build debris.
data "archive_file" "function_code" {
  type        = "zip"
  source_dir  = "${path.module}/../src"
  output_path = "${path.module}/../build/lambda_function.zip"
  excludes = [
    "totesys_local/**",
    "**/__pycache__/**",
    "*.egg-info/**",
  ]
}

resource "aws_lambda_function" "stage" {
  #checkov:skip=CKV_AWS_117:the VPC is optional (variables subnet_ids/security_group_ids, dynamic vpc_config below); checkov sees the default, no VPC, where the functions reach the databases over TLS on public endpoints
  #checkov:skip=CKV_AWS_116:invoked synchronously by Step Functions, which retries, alerts and fails the execution; a DLQ only applies to asynchronous invocations
  #checkov:skip=CKV_AWS_272:code signing needs an AWS Signer profile and signed artifacts in S3; the deploy uploads the zip Terraform builds from the reviewed repository
  for_each = local.functions

  function_name = local.function_names[each.key]
  description   = each.value.description
  role          = aws_iam_role.function[each.key].arn
  handler       = each.value.handler
  runtime       = var.python_runtime
  architectures = ["x86_64"] # the managed pandas layer and `make layer` are built for x86_64

  filename         = data.archive_file.function_code.output_path
  source_code_hash = data.archive_file.function_code.output_base64sha256
  # Every change of code or configuration publishes a new, immutable version (state_machine.tf).
  publish = true

  memory_size                    = var.function_memory_mb[each.key]
  timeout                        = var.function_timeout_seconds[each.key]
  reserved_concurrent_executions = var.function_reserved_concurrency[each.key]

  # Order matters: the own layer comes last so its files (pg8000, boto3/botocore) win (layers.tf).
  layers = [
    local.aws_sdk_pandas_layer_arn,
    aws_lambda_layer_version.dependencies.arn,
  ]

  kms_key_arn = local.kms_key_arn

  environment {
    variables = local.function_environment
  }

  tracing_config {
    mode = "Active"
  }

  # Only with subnet_ids: the functions then reach AWS through the endpoints in vpc.tf (or a NAT).
  dynamic "vpc_config" {
    for_each = local.in_vpc ? [1] : []
    content {
      subnet_ids         = var.subnet_ids
      security_group_ids = var.security_group_ids
    }
  }

  depends_on = [
    aws_cloudwatch_log_group.function,
    aws_iam_role_policy.function,
    aws_iam_role_policy.vpc_access,
  ]
}

# The release an operator invokes by hand (aws lambda invoke --function-name <name>:live) or rolls back
# (update-alias to an older version). It follows every deploy. The state machine does NOT invoke it: it
# names the published version itself (state_machine.tf), because Step Functions resolves an alias at each
# Task, so an execution running across a deploy would reach the new code halfway.
resource "aws_lambda_alias" "live" {
  for_each = local.functions

  name             = "live"
  description      = "The version the current state machine definition invokes (${each.key})"
  function_name    = aws_lambda_function.stage[each.key].function_name
  function_version = aws_lambda_function.stage[each.key].version
}
