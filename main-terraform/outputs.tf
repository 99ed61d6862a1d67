# Names and ARNs only; the alert address and credentials are never output.
output "function_names" {
  description = "The three Lambda functions' names, by stage (ingest, transform, load)."
  value       = { for stage, fn in aws_lambda_function.stage : stage => fn.function_name }
}

output "state_machine_arn" {
  description = "The ARN of the pipeline's state machine (start a run: aws stepfunctions start-execution --state-machine-arn <this> --input '{}')."
  value       = aws_sfn_state_machine.pipeline.arn
}

output "alert_topic_arn" {
  description = "The ARN of the SNS topic that carries every alert (failure, data quality, alarms)."
  value       = aws_sns_topic.alerts.arn
}

output "aws_sdk_pandas_layer_arn" {
  description = "The ARN of the managed AWS SDK for pandas layer the functions use (from AWS's public SSM parameter or aws_sdk_pandas_layer_arn)."
  value       = local.aws_sdk_pandas_layer_arn
}

output "dependencies_layer_arn" {
  description = "The ARN of the own layer version (layers/requirements.txt and the RDS CA bundle), after the managed layer on every function."
  value       = aws_lambda_layer_version.dependencies.arn
}

output "vpc_endpoint_ids" {
  description = "The IDs of the S3 gateway and Secrets Manager interface endpoints this stack created (empty without subnet_ids or with create_vpc_endpoints = false)."
  value = merge(
    { for endpoint in aws_vpc_endpoint.s3 : "s3" => endpoint.id },
    { for endpoint in aws_vpc_endpoint.secretsmanager : "secretsmanager" => endpoint.id },
  )
}
