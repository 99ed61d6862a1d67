# Terraform and provider versions, and the state backend (docs/DEPLOY.md).
terraform {
  required_version = ">= 1.11" # use_lockfile (S3-native locking) is GA from 1.11

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
