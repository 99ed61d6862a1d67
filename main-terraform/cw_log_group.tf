# Log groups created here (not implicitly by Lambda) so they have a retention, an encryption key, and the
# functions' IAM can name them exactly.
resource "aws_cloudwatch_log_group" "function" {
  for_each = local.functions

  name              = "/aws/lambda/${local.function_names[each.key]}"
  retention_in_days = var.log_retention_days
  kms_key_id        = local.kms_key_arn
}

resource "aws_cloudwatch_log_group" "state_machine" {
  # The /aws/vendedlogs/ prefix keeps Step Functions' log resource policy under its size limit.
  name              = "/aws/vendedlogs/states/${var.project}-pipeline"
  retention_in_days = var.log_retention_days
  kms_key_id        = local.kms_key_arn
}
