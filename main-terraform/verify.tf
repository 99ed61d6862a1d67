# `totesys verify` on AWS (issue 22): a function of its own, on a schedule of its own, comparing totesys with
# the warehouse (src/verify.py). It reads both databases and the ingest bucket and writes nothing but logs:
# its own role says so. Every completed run emits VerifyMismatches (0 when all matched); one or more alarms.
# Also here: the mass-delete guard's threshold (MAX_DELETE_FRACTION, read by the ingest) and the alarm on
# DeletionsHeld, the ingest's metric for deletions it holds until approved.

variable "verify_schedule_expression" {
  description = "How often the verify function compares totesys with the warehouse (default daily)."
  type        = string
  default     = "rate(1 day)"
}

variable "verify_memory_mb" {
  description = "Memory of the verify function (MB). At x100 (4.8M source rows) the checksums run inside the databases; the function holds the landed versions of the fact tables (16 bytes each)."
  type        = number
  default     = 1024
}

variable "verify_timeout_seconds" {
  description = "Timeout of the verify function (s); Lambda's ceiling is 900."
  type        = number
  default     = 300

  validation {
    condition     = var.verify_timeout_seconds >= 1 && var.verify_timeout_seconds <= 900
    error_message = "verify_timeout_seconds must be between 1 and 900."
  }
}

variable "max_delete_fraction" {
  description = "MAX_DELETE_FRACTION: when one ingest run would record more than this share of a table as deleted (or empty a table), that table's deletions are held until approved (execution input {\"approve_deletes\": [\"TABLE\"]}). Above 0, at most 1."
  type        = number
  default     = 0.25

  validation {
    condition     = var.max_delete_fraction > 0 && var.max_delete_fraction <= 1
    error_message = "max_delete_fraction must be above 0 and at most 1."
  }
}

locals {
  verify_function_name = "${var.project}-verify"
}

resource "aws_cloudwatch_log_group" "verify" {
  name              = "/aws/lambda/${local.verify_function_name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = local.kms_key_arn
}

resource "aws_iam_role" "verify" {
  name               = "${local.verify_function_name}-role"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

# Read only: the ingest bucket's objects (state pointer, manifests, landed files; no listing), both secrets.
data "aws_iam_policy_document" "verify" {
  statement {
    sid       = "ReadIngestBucket"
    actions   = ["s3:GetObject"]
    resources = ["${local.ingest_bucket_arn}/*"]
  }
  statement {
    sid       = "ReadDatabaseSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [local.totesys_secret_arn, local.warehouse_secret_arn]
  }
  statement {
    sid       = "UseDataKey"
    actions   = ["kms:Decrypt"]
    resources = [local.kms_key_arn]
  }
  statement {
    sid       = "WriteOwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.verify.arn}:*"]
  }
  statement {
    sid = "XRayTraces"
    # X-Ray's PutTraceSegments/PutTelemetryRecords support no resource-level permissions: AWS requires "*".
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "verify" {
  name   = "${local.verify_function_name}-policy"
  role   = aws_iam_role.verify.id
  policy = data.aws_iam_policy_document.verify.json
}

resource "aws_iam_role_policy" "verify_vpc_access" {
  count = local.in_vpc ? 1 : 0

  name   = "${local.verify_function_name}-vpc-access"
  role   = aws_iam_role.verify.id
  policy = data.aws_iam_policy_document.vpc_access.json
}

resource "aws_lambda_function" "verify" {
  #checkov:skip=CKV_AWS_117:the VPC is optional (variables subnet_ids/security_group_ids, dynamic vpc_config below), as for the stage functions
  #checkov:skip=CKV_AWS_116:a scheduled check whose failure raises the function's Errors alarm below; a failed verify is re-run by the next schedule, a DLQ would add nothing
  #checkov:skip=CKV_AWS_272:code signing needs an AWS Signer profile and signed artifacts in S3; the deploy uploads the zip Terraform builds from the reviewed repository
  function_name = local.verify_function_name
  description   = "totesys compared with the warehouse (checksums in each database); emits VerifyMismatches"
  role          = aws_iam_role.verify.arn
  handler       = "verify.lambda_handler"
  runtime       = var.python_runtime
  architectures = ["x86_64"]

  filename         = data.archive_file.function_code.output_path
  source_code_hash = data.archive_file.function_code.output_base64sha256

  memory_size                    = var.verify_memory_mb
  timeout                        = var.verify_timeout_seconds
  reserved_concurrent_executions = 1

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

  dynamic "vpc_config" {
    for_each = local.in_vpc ? [1] : []
    content {
      subnet_ids         = var.subnet_ids
      security_group_ids = var.security_group_ids
    }
  }

  depends_on = [
    aws_cloudwatch_log_group.verify,
    aws_iam_role_policy.verify,
    aws_iam_role_policy.verify_vpc_access,
  ]
}

resource "aws_cloudwatch_event_rule" "verify" {
  name                = "${local.verify_function_name}-schedule"
  description         = "Starts the ToteSys verify: ${var.verify_schedule_expression}"
  schedule_expression = var.verify_schedule_expression
  state               = var.schedule_enabled ? "ENABLED" : "DISABLED"
}

resource "aws_cloudwatch_event_target" "verify" {
  rule = aws_cloudwatch_event_rule.verify.name
  arn  = aws_lambda_function.verify.arn
}

resource "aws_lambda_permission" "verify_schedule" {
  statement_id  = "AllowVerifySchedule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.verify.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.verify.arn
}

resource "aws_cloudwatch_metric_alarm" "verify_mismatches" {
  alarm_name          = "${local.verify_function_name}-mismatches"
  alarm_description   = "ToteSys verify: totesys and the warehouse differ. The function's log names the tables and ids; repair with the execution input {\"resync\": [\"TABLE\"]} (README, Trust and repair)."
  namespace           = local.metrics_namespace
  metric_name         = "VerifyMismatches"
  dimensions          = { service = local.metrics_service }
  statistic           = "Maximum"
  period              = 3600
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alerts.arn]
}

# A verify that cannot run (a database unreachable, the landing zone damaged) emits no VerifyMismatches:
# the function's own errors alarm instead.
resource "aws_cloudwatch_metric_alarm" "verify_errors" {
  alarm_name          = "${local.verify_function_name}-errors"
  alarm_description   = "ToteSys verify could not run: see its log group."
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.verify.function_name }
  statistic           = "Sum"
  period              = 3600
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alerts.arn]
}

# The ingest emits DeletionsHeld (dimensions service, table) on every run that holds a table's deletions.
resource "aws_cloudwatch_metric_alarm" "deletions_held" {
  for_each = toset(var.source_tables)

  alarm_name          = "${var.project}-deletions-held-${each.key}"
  alarm_description   = "ToteSys: a mass deletion of ${each.key} is held (more than MAX_DELETE_FRACTION of the table, or all of it). Nothing is removed from the warehouse until approved: start an execution with input {\"approve_deletes\": [\"${each.key}\"]}."
  namespace           = local.metrics_namespace
  metric_name         = "DeletionsHeld"
  dimensions          = { service = local.metrics_service, table = each.key }
  statistic           = "Maximum"
  period              = 900
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alerts.arn]
}
