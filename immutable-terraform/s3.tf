# The landing zone (ingest) and the star-schema Parquet (processed) buckets. Data objects are written once
# (keys name the table and the batch time); only _state/*.json pointers are overwritten, and versioning
# keeps their history.
# Two plain resources rather than for_each: checkov's graph cannot follow for_each keys between a bucket
# and its versioning/encryption/... resources, and would report those settings missing.
resource "aws_s3_bucket" "ingest" {
  #checkov:skip=CKV_AWS_18:access logging needs a third log bucket per account; CloudTrail data events are the audit trail if required
  #checkov:skip=CKV_AWS_144:cross-region replication doubles storage cost; the warehouse can be rebuilt from either bucket
  #checkov:skip=CKV2_AWS_62:nothing consumes S3 events: the state machine drives every stage on a schedule
  # bucket_prefix: a globally unique name without hard-coding the account; main-terraform reads it from SSM.
  bucket_prefix = "${var.project}-ingest-"
  # Opt-in (default false): lets `terraform destroy` delete a bucket that still holds objects and
  # versions. Set it only to tear the stack down for good (README, "Destroy").
  force_destroy = var.force_destroy_buckets
}

resource "aws_s3_bucket" "processed" {
  #checkov:skip=CKV_AWS_18:access logging needs a third log bucket per account; CloudTrail data events are the audit trail if required
  #checkov:skip=CKV_AWS_144:cross-region replication doubles storage cost; the warehouse can be rebuilt from either bucket
  #checkov:skip=CKV2_AWS_62:nothing consumes S3 events: the state machine drives every stage on a schedule
  bucket_prefix = "${var.project}-processed-"
  # Opt-in (default false): lets `terraform destroy` delete a bucket that still holds objects and
  # versions. Set it only to tear the stack down for good (README, "Destroy").
  force_destroy = var.force_destroy_buckets
}

locals {
  data_buckets = {
    ingest    = aws_s3_bucket.ingest
    processed = aws_s3_bucket.processed
  }
}

resource "aws_s3_bucket_versioning" "data" {
  for_each = local.data_buckets

  bucket = each.value.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "data" {
  for_each = local.data_buckets

  bucket = each.value.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.data.arn
    }
    # S3 Bucket Keys cut KMS requests (and their cost) by orders of magnitude for many small objects.
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_public_access_block" "data" {
  for_each = local.data_buckets

  bucket                  = each.value.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

locals {
  # Only table data moves to colder storage: one rule per table prefix (an S3 rule filters on one prefix).
  # _state/ (pointers), _batches/ (manifests), _snapshots/ (dimension snapshots) and _rejected/ are read
  # on every execution and stay in S3 Standard.
  table_prefixes = {
    ingest    = [for table in var.source_tables : "${table}/"]
    processed = [for table in var.warehouse_tables : "${table}/"]
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "data" {
  for_each = local.data_buckets

  bucket = each.value.id

  dynamic "rule" {
    for_each = local.table_prefixes[each.key]
    content {
      id     = "colder-storage-${trimsuffix(rule.value, "/")}"
      status = "Enabled"
      filter {
        prefix = rule.value
      }

      transition {
        days          = var.transition_to_ia_days
        storage_class = "STANDARD_IA"
      }
      transition {
        days          = var.transition_to_glacier_ir_days
        storage_class = "GLACIER_IR"
      }
    }
  }

  # Whole bucket: superseded versions (only the _state/ pointers are ever overwritten) and failed uploads.
  rule {
    id     = "expire-superseded-versions"
    status = "Enabled"
    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.data]
}

data "aws_iam_policy_document" "tls_only" {
  for_each = local.data_buckets

  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      each.value.arn,
      "${each.value.arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "tls_only" {
  for_each = local.data_buckets

  bucket = each.value.id
  policy = data.aws_iam_policy_document.tls_only[each.key].json

  depends_on = [aws_s3_bucket_public_access_block.data]
}
