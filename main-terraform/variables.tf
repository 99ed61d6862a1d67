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
  description = "Reserved concurrency per function; -1 (the default for all three) reserves none. Lambda refuses any reservation that would leave fewer than 10 unreserved concurrent executions in the account (\"UnreservedConcurrentExecution below its minimum value of [10]\"), and a new account's limit may be 10, so reserving even 1 fails there. Nothing needs it: the source advisory lock serialises ingest and the state machine skips an execution that starts while another runs."
  type        = map(number)
  default = {
    ingest    = -1
    transform = -1
    load      = -1
  }

  validation {
    condition     = alltrue([for n in values(var.function_reserved_concurrency) : n == -1 || n >= 0])
    error_message = "function_reserved_concurrency values are -1 (no reservation) or a count >= 0."
  }
}

variable "aws_sdk_pandas_version" {
  description = "Release of AWS's managed AWS SDK for pandas layer. Its ARN in the deploy region is read from AWS's public SSM parameter /aws/service/aws-sdk-pandas/<version>/<py3.NN>/x86_64/layer-arn (publishing accounts differ per region). Pinned on purpose (release 3.16.1 grew by 37 MB and broke deploys); 3.11.0 = pandas 2.2.3, pyarrow 18.1.0, matching requirements.txt."
  type        = string
  default     = "3.11.0"
}

variable "aws_sdk_pandas_layer_arn" {
  description = "Full ARN of the managed pandas layer, overriding the SSM lookup (e.g. a region or partition without the public parameter). Empty (default) = look it up from aws_sdk_pandas_version."
  type        = string
  default     = ""

  validation {
    condition     = var.aws_sdk_pandas_layer_arn == "" || can(regex("^arn:[^:]+:lambda:[^:]+:[0-9]{12}:layer:[^:]+:[0-9]+$", var.aws_sdk_pandas_layer_arn))
    error_message = "aws_sdk_pandas_layer_arn must be a layer version ARN (arn:<partition>:lambda:<region>:<account>:layer:<name>:<version>) or empty."
  }
}

# Network: without subnets the functions run outside a VPC and reach the databases, S3 and Secrets Manager
# over public endpoints. README.md, "Network topologies".
variable "subnet_ids" {
  description = "Private subnets (of one VPC) the functions run in; empty (default) = no VPC. Set together with security_group_ids."
  type        = list(string)
  default     = []
}

variable "security_group_ids" {
  description = "Security groups of the functions when subnet_ids is set: egress to the databases (5432) and to HTTPS 443 (the VPC endpoints or a NAT gateway)."
  type        = list(string)
  default     = []

  validation {
    condition     = (length(var.security_group_ids) == 0) == (length(var.subnet_ids) == 0)
    error_message = "Set subnet_ids and security_group_ids together (both empty = no VPC)."
  }
}

variable "create_vpc_endpoints" {
  description = "With subnet_ids set: create the S3 gateway endpoint (on vpc_route_table_ids) and the Secrets Manager interface endpoint the functions need. false = the subnets reach AWS through a NAT gateway you provide."
  type        = bool
  default     = true
}

variable "vpc_route_table_ids" {
  description = "Route tables of subnet_ids, for the S3 gateway endpoint (required when subnet_ids is set and create_vpc_endpoints is true)."
  type        = list(string)
  default     = []
}

# TLS to the two databases. The functions read these as TOTESYS_SSLMODE / TOTESYS_SSLROOTCERT and
# WAREHOUSE_SSLMODE / WAREHOUSE_SSLROOTCERT (the contract: docs/DEPLOY.md, "TLS to the databases").
variable "db_ssl_mode" {
  description = "TLS mode per database (keys totesys, warehouse): disable (plaintext), require (encrypted, server not verified), verify-full (encrypted, certificate chain checked against db_ssl_root_cert and the host name against the certificate)."
  type        = map(string)
  default = {
    totesys   = "verify-full"
    warehouse = "verify-full"
  }

  validation {
    condition     = alltrue([for mode in values(var.db_ssl_mode) : contains(["disable", "require", "verify-full"], mode)]) && toset(keys(var.db_ssl_mode)) == toset(["totesys", "warehouse"])
    error_message = "db_ssl_mode needs keys totesys and warehouse, each disable, require or verify-full."
  }
}

variable "db_ssl_root_cert" {
  description = "CA bundle (PEM path on Lambda) per database for verify-full. The default is the RDS global bundle that `make layer` downloads into the own layer (layers/certs/ -> /opt/certs/); a path under /opt/ must exist in layers/ when you deploy."
  type        = map(string)
  default = {
    totesys   = "/opt/certs/rds-global-bundle.pem"
    warehouse = "/opt/certs/rds-global-bundle.pem"
  }

  validation {
    condition     = toset(keys(var.db_ssl_root_cert)) == toset(["totesys", "warehouse"])
    error_message = "db_ssl_root_cert needs keys totesys and warehouse."
  }
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

variable "ingest_future_tolerance_seconds" {
  description = "INGEST_FUTURE_TOLERANCE_SECONDS: a source row whose last_updated is more than this many seconds (plus the source zone's daylight-saving shift) ahead of the source database's clock is landed and quarantined in etl_rejected_rows with an alert, instead of waiting for the clock. The source's own clock stamps rows, so a legitimate row is never ahead of it; 300 is far above any NTP-synced writer's skew and well inside the 30-minute freshness target."
  type        = number
  default     = 300

  validation {
    condition     = var.ingest_future_tolerance_seconds >= 0 && floor(var.ingest_future_tolerance_seconds) == var.ingest_future_tolerance_seconds
    error_message = "ingest_future_tolerance_seconds must be a whole number, 0 or more."
  }
}

variable "max_batch_rows" {
  description = "MAX_BATCH_ROWS: rows of the order/payment tables one batch takes at most; a larger backfill is landed in several batches, the state machine looping ingest -> transform -> load (at most 24 rounds per execution). 0 = no cap. At 2,000,000 each invocation of a x100 backfill peaked at 315 MB (ingest), 598 MB (transform) and 515 MB (load), under half of each function's memory (docs/BENCHMARKS.md, issue 24)."
  type        = number
  default     = 2000000

  validation {
    condition     = var.max_batch_rows >= 0 && floor(var.max_batch_rows) == var.max_batch_rows
    error_message = "max_batch_rows must be a whole number, 0 or more."
  }
}

variable "warehouse_keep_connection_seconds" {
  description = "WAREHOUSE_KEEP_CONNECTION_SECONDS: how long the load function may keep its warehouse connection for its next invocation in the same warm container, in seconds from when it was opened (checked before each reuse, closed on any error or a rotated secret; utils/db/kept.py). A warm backend saves the connection's start and the first catalog look-ups of every table (docs/BENCHMARKS.md, issue 25). Holds one idle connection slot per warm container. 0 = a new connection for every invocation."
  type        = number
  default     = 3600

  validation {
    condition     = var.warehouse_keep_connection_seconds >= 0 && floor(var.warehouse_keep_connection_seconds) == var.warehouse_keep_connection_seconds
    error_message = "warehouse_keep_connection_seconds must be a whole number, 0 or more."
  }
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
  description = "Start the pipeline on schedule_expression. Default false: the first deploy starts nothing, so the alert e-mail subscription can be confirmed (and a first run started by hand) before any failure could go unheard; then apply with true (README, \"First deploy\")."
  type        = bool
  default     = false
}

variable "per_table_row_metrics" {
  description = "true = the Rows metric also per source/warehouse table (dimension table: ~33 more custom metrics, about $10/month); false (default) = totals per stage only (TOTESYS_PER_TABLE_METRICS)."
  type        = bool
  default     = false
}

variable "ingest_mode" {
  description = "INGEST_MODE: how ingest finds changes. \"cursor\" (a last_updated window and key-set diffs) or \"cdc\" (a logical replication slot read with test_decoding: needs rds.logical_replication = 1 and rds_replication for the role; README, \"Change data capture\")."
  type        = string
  default     = "cursor"

  validation {
    condition     = contains(["cursor", "cdc"], var.ingest_mode)
    error_message = "ingest_mode must be \"cursor\" or \"cdc\"."
  }
}

variable "cdc_slot_name" {
  description = "CDC_SLOT_NAME: the logical replication slot INGEST_MODE=cdc reads on totesys (1 to 63 lower-case letters, digits or underscores; one slot per pipeline)."
  type        = string
  default     = "totesys_cdc"

  validation {
    condition     = can(regex("^[a-z0-9_]{1,63}$", var.cdc_slot_name))
    error_message = "cdc_slot_name must be 1 to 63 lower-case letters, digits or underscores."
  }
}

variable "cdc_retained_wal_alarm_bytes" {
  description = "The alarm on CdcRetainedWalBytes fires when the CDC slot keeps more WAL than this on totesys (bytes; keep it well below the source's max_slot_wal_keep_size and free disk). Only meaningful with ingest_mode = \"cdc\"."
  type        = number
  default     = 5368709120 # 5 GiB

  validation {
    condition     = var.cdc_retained_wal_alarm_bytes > 0
    error_message = "cdc_retained_wal_alarm_bytes must be above 0."
  }
}
