variable "region" {
  description = "AWS region (the same as immutable-terraform's)."
  type        = string
  default     = "eu-west-2"
}

variable "project" {
  description = "Name prefix of every resource."
  type        = string
  default     = "totesys"
}

variable "ssm_prefix" {
  description = "SSM path where immutable-terraform published bucket and secret names (same variable there)."
  type        = string
  default     = "/totesys"
}

variable "python_runtime" {
  description = "Lambda runtime; the managed pandas layer and `make layer` (--python-version) must match it."
  type        = string
  default     = "python3.12"
}

# Sized from `make bench` (scale-1 totesys): transform holds a batch and the dimension snapshots as Arrow
# tables and pandas frames at once, so it gets the most memory (Lambda also scales CPU with memory).
variable "function_memory_mb" {
  description = "Memory per function (MB)."
  type        = map(number)
  default = {
    ingest    = 1024
    transform = 2048
    load      = 1024
  }
}

variable "function_timeout_seconds" {
  description = "Timeout per function (s); Lambda's ceiling is 900."
  type        = map(number)
  default = {
    ingest    = 300
    transform = 600
    load      = 600
  }
}

variable "function_reserved_concurrency" {
  description = "Reserved concurrency per function; -1 = unreserved. Ingest is pinned to 1 (one extraction at a time; the advisory lock is the second guard). Reserving for all three can push a new account (limit 10) below the 10-unreserved minimum, so transform and load rely on the state machine running one execution at a time."
  type        = map(number)
  default = {
    ingest    = 1
    transform = -1
    load      = -1
  }
}

variable "aws_sdk_pandas_layer_version" {
  description = "Version of the managed layer arn:aws:lambda:<region>:336392948345:layer:AWSSDKPandas-Python312:<version>. Pinned on purpose (a release grew and broke deploys); look it up per region at https://aws-sdk-pandas.readthedocs.io/en/stable/layers.html. 16 = AWS SDK for pandas 3.11.0 (pandas 2.2.3, pyarrow 18.1.0) in eu-west-2, matching requirements.txt."
  type        = number
  default     = 16
}

variable "source_tables" {
  description = "The totesys tables ingest may write (S3 prefixes its IAM policy allows). Must equal utils.tables.SOURCE_TABLES (a test checks)."
  type        = list(string)
  default = [
    "address", "counterparty", "currency", "department", "design", "staff",
    "sales_order", "purchase_order", "payment_type", "transaction", "payment",
  ]
}

variable "ingest_overlap_seconds" {
  description = "INGEST_OVERLAP_SECONDS: how far back each ingest run re-reads to catch late commits."
  type        = number
  default     = 3600
}

variable "ingest_parallel_connections" {
  description = "INGEST_PARALLEL_CONNECTIONS: source connections that read the tables in parallel on one shared snapshot (1 = one connection). Each uses a connection slot on totesys."
  type        = number
  default     = 2

  validation {
    condition     = var.ingest_parallel_connections >= 1 && var.ingest_parallel_connections <= 8
    error_message = "ingest_parallel_connections must be between 1 and 8 (utils/config.py allows 8)."
  }
}

variable "log_level" {
  description = "LOG_LEVEL of the functions."
  type        = string
  default     = "INFO"
}

variable "log_retention_days" {
  description = "Retention of the functions' and state machine's log groups."
  type        = number
  default     = 365
}

variable "schedule_expression" {
  description = "How often the pipeline starts. Every 15 minutes keeps the warehouse within 30 minutes of totesys even when one run fails."
  type        = string
  default     = "rate(15 minutes)"
}

variable "schedule_enabled" {
  description = "Set false to deploy without starting runs (e.g. before the warehouse is reachable)."
  type        = bool
  default     = true
}
