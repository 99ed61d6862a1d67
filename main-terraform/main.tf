# The main stack: the pipeline itself (functions, layer, IAM, logs, alarms, alerts, state machine,
# schedule). Safe to destroy and re-create: everything that holds data lives in immutable-terraform.
# How to deploy it (state bucket, variables, the deploy role, the order of the stacks): docs/DEPLOY.md.
provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project   = var.project
      Stack     = "main"
      ManagedBy = "terraform"
    }
  }
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_ssm_parameter" "kms_key_arn" {
  name = "${var.ssm_prefix}/kms-key-arn"
}

locals {
  account_id  = data.aws_caller_identity.current.account_id
  partition   = data.aws_partition.current.partition
  kms_key_arn = data.aws_ssm_parameter.kms_key_arn.value
}
