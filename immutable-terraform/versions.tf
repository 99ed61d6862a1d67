# Terraform and provider versions, and the state backend (docs/DEPLOY.md).
terraform {
  required_version = ">= 1.11" # use_lockfile (S3-native locking) is GA from 1.11

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
  }

  # Partial configuration: the state bucket and region are given at `terraform init` time
  # (-backend-config=bucket=... -backend-config=region=...), see docs/DEPLOY.md. The key is fixed so the
  # two stacks can never overwrite each other's state; use_lockfile is S3-native locking (GA in Terraform 1.11).
  backend "s3" {
    key          = "totesys/immutable.tfstate"
    encrypt      = true
    use_lockfile = true
  }
}
