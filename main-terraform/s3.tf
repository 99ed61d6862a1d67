# The data buckets belong to immutable-terraform; this stack only looks their names up.
data "aws_ssm_parameter" "ingest_bucket_name" {
  name = "${var.ssm_prefix}/ingest-bucket-name"
}

data "aws_ssm_parameter" "processed_bucket_name" {
  name = "${var.ssm_prefix}/processed-bucket-name"
}

locals {
  ingest_bucket_name    = data.aws_ssm_parameter.ingest_bucket_name.value
  processed_bucket_name = data.aws_ssm_parameter.processed_bucket_name.value
  ingest_bucket_arn     = "arn:${local.partition}:s3:::${local.ingest_bucket_name}"
  processed_bucket_arn  = "arn:${local.partition}:s3:::${local.processed_bucket_name}"
}
