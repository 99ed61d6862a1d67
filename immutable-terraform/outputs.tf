# Names only: secret values must never reach outputs (or the CI log that prints them).
output "ingest_bucket_name" {
  description = "The name of the ingest bucket (the landing zone: one Parquet object per table and batch)."
  value       = aws_s3_bucket.ingest.bucket
}

output "processed_bucket_name" {
  description = "The name of the processed bucket (star-schema Parquet per warehouse table and batch)."
  value       = aws_s3_bucket.processed.bucket
}

output "secret_names" {
  description = "The Secrets Manager secret names, by key (totesys, warehouse, alert_email); never their values."
  value       = { for key, secret in aws_secretsmanager_secret.this : key => secret.name }
}

output "ssm_parameter_names" {
  description = "The SSM parameters through which main-terraform finds the buckets, secrets and key."
  value       = sort([for parameter in aws_ssm_parameter.names : parameter.name])
}

output "kms_key_arn" {
  description = "The ARN of the KMS key that encrypts the buckets, secrets, log groups and alert topic."
  value       = aws_kms_key.data.arn
}
