# Names and ARNs only; the alert address and credentials are never output.
output "function_names" {
  value = { for stage, fn in aws_lambda_function.stage : stage => fn.function_name }
}

output "state_machine_arn" {
  value = aws_sfn_state_machine.pipeline.arn
}

output "alert_topic_arn" {
  value = aws_sns_topic.alerts.arn
}

output "aws_sdk_pandas_layer_arn" {
  value = local.aws_sdk_pandas_layer_arn
}

output "dependencies_layer_arn" {
  value = aws_lambda_layer_version.dependencies.arn
}
