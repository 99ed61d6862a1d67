# The main stack: the pipeline itself (functions, layer, IAM, logs, alarms, alerts, state machine,
# schedule). Safe to destroy and re-create: everything that holds data lives in immutable-terraform.
terraform {
  required_version = ">= 1.10"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
    archive = {
      source  = "hashicorp/archive"
      version = "~> 2.7"
    }
  }

  # Partial configuration, like immutable-terraform: bucket and region come from `terraform init
  # -backend-config=...` (docs/DEPLOY.md); the key differs from the immutable stack's.
  backend "s3" {
    key          = "totesys/main.tfstate"
    encrypt      = true
    use_lockfile = true
  }
}

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
