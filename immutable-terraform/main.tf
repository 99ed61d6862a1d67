# The immutable stack: what outlives a redeploy of the pipeline (data buckets, credentials, the key that
# encrypts them, and the SSM parameters through which main-terraform finds them).
# How to deploy it (state bucket, variables, the deploy role, the order of the stacks): docs/DEPLOY.md.
provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project   = var.project
      Stack     = "immutable"
      ManagedBy = "terraform"
    }
  }
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

# One customer-managed key for the data at rest: both buckets, the three secrets, and (granted below to
# the services that need it) the pipeline's log groups and alert topic in main-terraform.
resource "aws_kms_key" "data" {
  description             = "${var.project}: buckets, secrets, logs and alerts"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "data" {
  name          = "alias/${var.project}-data"
  target_key_id = aws_kms_key.data.key_id
}

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_111:a key policy: "*" as resource means this key only
  #checkov:skip=CKV_AWS_356:a key policy: "*" as resource means this key only
  #checkov:skip=CKV_AWS_109:a key policy: the account root must administer its key, or the key becomes unmanageable
  # In a key policy "*" as resource means "this key"; the account root statement is what lets IAM
  # policies (the Lambda and state machine roles) grant use of the key at all.
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }

  statement {
    sid       = "CloudWatchLogsEncryptsPipelineLogGroups"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${data.aws_partition.current.partition}:logs:${var.region}:${data.aws_caller_identity.current.account_id}:log-group:*"]
    }
  }

  # CloudWatch alarms publish to the encrypted SNS topic; the alarm service needs the data key for that.
  statement {
    sid       = "CloudWatchAlarmsPublishToEncryptedTopic"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}
