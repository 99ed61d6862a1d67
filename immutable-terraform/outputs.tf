# Names only: secret values must never reach outputs (or the CI log that prints them).
output "ingest_bucket_name" {
  value = aws_s3_bucket.ingest.bucket
}

output "processed_bucket_name" {
  value = aws_s3_bucket.processed.bucket
}

output "secret_names" {
  value = { for key, secret in aws_secretsmanager_secret.this : key => secret.name }
}

output "ssm_parameter_names" {
  value = sort([for parameter in aws_ssm_parameter.names : parameter.name])
}

output "kms_key_arn" {
  value = aws_kms_key.data.arn
}
