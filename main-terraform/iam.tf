# Least privilege. Each function: only its buckets (and, for writes, only the prefixes it writes), only its
# secret, only its log group (vpc.tf adds the network-interface actions when the functions run in a VPC).
# The state machine: only the three functions, the alert topic and listing its own executions.
# "*" resources appear only where the AWS API has no resource-level permissions; each is commented.

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "function" {
  for_each = local.functions

  name               = "${local.function_names[each.key]}-role"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

locals {
  # The prefixes besides the data tables, from the file the code takes its own prefix constants from
  # (src/utils/aws/layout.py): manifests, key sets and deletes (ingest); manifests, snapshots, quarantined
  # rows and deletes (transform). The local run enforces the rendered policies (totesys_local.iam).
  write_prefixes = jsondecode(file("${path.module}/../src/utils/aws/write_prefixes.json"))
  # ingest writes one prefix per source table, those prefixes and (below) its own state pointer; nothing else.
  ingest_write_prefixes = concat(var.source_tables, values(local.write_prefixes.ingest))
  # transform writes the star-schema tables, those prefixes (a rebuild's generations among them) and (below)
  # its own state pointer.
  processed_write_prefixes = concat(["dim_*", "fact_*"], values(local.write_prefixes.processed))

  function_log_group_arns = { for stage, group in aws_cloudwatch_log_group.function : stage => "${group.arn}:*" }
}

data "aws_iam_policy_document" "ingest" {
  statement {
    sid       = "ListIngestBucket"
    actions   = ["s3:ListBucket"]
    resources = [local.ingest_bucket_arn]
  }
  statement {
    sid       = "ReadIngestBucket"
    actions   = ["s3:GetObject"]
    resources = ["${local.ingest_bucket_arn}/*"]
  }
  statement {
    sid     = "WriteIngestPrefixes"
    actions = ["s3:PutObject"]
    resources = concat(
      [for prefix in local.ingest_write_prefixes : "${local.ingest_bucket_arn}/${prefix}/*"],
      ["${local.ingest_bucket_arn}/_state/ingest.json"],
    )
  }
  statement {
    sid       = "ReadTotesysSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [local.totesys_secret_arn]
  }
  statement {
    sid       = "UseDataKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [local.kms_key_arn]
  }
  statement {
    sid       = "WriteOwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [local.function_log_group_arns["ingest"]]
  }
  statement {
    sid = "XRayTraces"
    # X-Ray's PutTraceSegments/PutTelemetryRecords support no resource-level permissions: AWS requires "*".
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    resources = ["*"]
  }
}

data "aws_iam_policy_document" "transform" {
  statement {
    sid       = "ListBothBuckets"
    actions   = ["s3:ListBucket"]
    resources = [local.ingest_bucket_arn, local.processed_bucket_arn]
  }
  statement {
    sid       = "ReadIngestBucket"
    actions   = ["s3:GetObject"]
    resources = ["${local.ingest_bucket_arn}/*"]
  }
  statement {
    sid       = "ReadProcessedBucket"
    actions   = ["s3:GetObject"]
    resources = ["${local.processed_bucket_arn}/*"]
  }
  statement {
    sid     = "WriteProcessedPrefixes"
    actions = ["s3:PutObject"]
    resources = concat(
      [for prefix in local.processed_write_prefixes : "${local.processed_bucket_arn}/${prefix}/*"],
      ["${local.processed_bucket_arn}/_state/transform.json"],
    )
  }
  statement {
    sid       = "UseDataKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [local.kms_key_arn]
  }
  statement {
    sid       = "WriteOwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [local.function_log_group_arns["transform"]]
  }
  statement {
    sid = "XRayTraces"
    # X-Ray's PutTraceSegments/PutTelemetryRecords support no resource-level permissions: AWS requires "*".
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    resources = ["*"]
  }
}

data "aws_iam_policy_document" "load" {
  statement {
    sid       = "ListProcessedBucket"
    actions   = ["s3:ListBucket"]
    resources = [local.processed_bucket_arn]
  }
  statement {
    sid       = "ReadProcessedBucket"
    actions   = ["s3:GetObject"]
    resources = ["${local.processed_bucket_arn}/*"]
  }
  statement {
    sid = "WriteRebuildPointer"
    # The one object the load writes: the rebuild it starts and finishes (utils/rebuild/rounds.py).
    actions   = ["s3:PutObject"]
    resources = ["${local.processed_bucket_arn}/_state/rebuild.json"]
  }
  statement {
    sid       = "ReadWarehouseSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [local.warehouse_secret_arn]
  }
  statement {
    sid = "UseDataKey"
    # GenerateDataKey: the rebuild pointer is written SSE-KMS like every object of the bucket.
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [local.kms_key_arn]
  }
  statement {
    sid       = "WriteOwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [local.function_log_group_arns["load"]]
  }
  statement {
    sid = "XRayTraces"
    # X-Ray's PutTraceSegments/PutTelemetryRecords support no resource-level permissions: AWS requires "*".
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    resources = ["*"]
  }
}

locals {
  function_policies = {
    ingest    = data.aws_iam_policy_document.ingest.json
    transform = data.aws_iam_policy_document.transform.json
    load      = data.aws_iam_policy_document.load.json
  }
}

resource "aws_iam_role_policy" "function" {
  for_each = local.functions

  name   = "${local.function_names[each.key]}-least-privilege"
  role   = aws_iam_role.function[each.key].id
  policy = local.function_policies[each.key]
}

# The state machine.
data "aws_iam_policy_document" "states_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["states.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "state_machine" {
  name               = "${var.project}-pipeline-role"
  assume_role_policy = data.aws_iam_policy_document.states_assume.json
}

data "aws_iam_policy_document" "state_machine" {
  statement {
    sid     = "InvokeTheThreeStages"
    actions = ["lambda:InvokeFunction"]
    # Published versions (and the alias) only: the unqualified ARN would run $LATEST, whatever was
    # deployed last, and is refused.
    resources = [for fn in aws_lambda_function.stage : "${fn.arn}:*"]
  }
  statement {
    sid = "FindOverlappingExecutions"
    # CheckOverlap (aws-sdk:sfn:listExecutions) lists this state machine's RUNNING executions. Its ARN is
    # built from the name (local.state_machine_arn): the machine itself depends on this policy.
    actions   = ["states:ListExecutions"]
    resources = [local.state_machine_arn]
  }
  statement {
    sid       = "PublishAlerts"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alerts.arn]
  }
  statement {
    sid       = "EncryptAlertMessages"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [local.kms_key_arn]
  }
  statement {
    sid = "DeliverExecutionLogs"
    # CloudWatch Logs vended delivery for Step Functions supports no resource-level permissions: AWS
    # documents "*" for these actions (the log group itself is chosen in the state machine's config).
    actions = [
      "logs:CreateLogDelivery",
      "logs:GetLogDelivery",
      "logs:UpdateLogDelivery",
      "logs:DeleteLogDelivery",
      "logs:ListLogDeliveries",
      "logs:PutResourcePolicy",
      "logs:DescribeResourcePolicies",
      "logs:DescribeLogGroups",
    ]
    resources = ["*"]
  }
  statement {
    sid = "XRayTraces"
    # X-Ray's write and sampling APIs support no resource-level permissions: AWS requires "*".
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "state_machine" {
  name   = "${var.project}-pipeline-least-privilege"
  role   = aws_iam_role.state_machine.id
  policy = data.aws_iam_policy_document.state_machine.json
}

# EventBridge: start executions of this state machine, nothing else.
data "aws_iam_policy_document" "events_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "scheduler" {
  name               = "${var.project}-schedule-role"
  assume_role_policy = data.aws_iam_policy_document.events_assume.json
}

data "aws_iam_policy_document" "scheduler" {
  statement {
    sid       = "StartPipeline"
    actions   = ["states:StartExecution"]
    resources = [aws_sfn_state_machine.pipeline.arn]
  }
}

resource "aws_iam_role_policy" "scheduler" {
  name   = "${var.project}-schedule-start-pipeline"
  role   = aws_iam_role.scheduler.id
  policy = data.aws_iam_policy_document.scheduler.json
}
