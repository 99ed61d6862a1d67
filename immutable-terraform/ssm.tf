# Names (never values) that main-terraform reads, so the two stacks share no state file.
locals {
  ssm_parameters = {
    "ingest-bucket-name"      = aws_s3_bucket.ingest.bucket
    "processed-bucket-name"   = aws_s3_bucket.processed.bucket
    "totesys-secret-name"     = aws_secretsmanager_secret.this["totesys"].name
    "totesys-secret-arn"      = aws_secretsmanager_secret.this["totesys"].arn
    "warehouse-secret-name"   = aws_secretsmanager_secret.this["warehouse"].name
    "warehouse-secret-arn"    = aws_secretsmanager_secret.this["warehouse"].arn
    "alert-email-secret-name" = aws_secretsmanager_secret.this["alert_email"].name
    "alert-email-secret-arn"  = aws_secretsmanager_secret.this["alert_email"].arn
    "kms-key-arn"             = aws_kms_key.data.arn
  }
}

resource "aws_ssm_parameter" "names" {
  #checkov:skip=CKV2_AWS_34:these are resource names and ARNs, not secrets; String keeps them readable in the console and plans
  for_each = local.ssm_parameters

  name        = "${var.ssm_prefix}/${each.key}"
  description = "${var.project}: ${each.key} (written by immutable-terraform, read by main-terraform)"
  type        = "String"
  value       = each.value
}
