variable "region" {
  description = "AWS region of both stacks (main-terraform must use the same one)."
  type        = string
  default     = "eu-west-2"
}

variable "project" {
  description = "Name prefix of every resource."
  type        = string
  default     = "totesys"
}

variable "ssm_prefix" {
  description = "SSM parameter path under which this stack publishes names for main-terraform (same variable there)."
  type        = string
  default     = "/totesys"
}

variable "secret_name_prefix" {
  description = "Secrets Manager names are <prefix>/db-credentials, <prefix>/warehouse-credentials, <prefix>/alert-email (the code's defaults use \"totesys\")."
  type        = string
  default     = "totesys"
}

variable "credentials_dir" {
  description = "Folder holding db_credentials.json, warehouse_credentials.json and email.txt (git-ignored; copy the .example files)."
  type        = string
  default     = ".."
}

variable "source_tables" {
  description = "The totesys tables: the ingest bucket's table prefixes (<table>/), the only ones the lifecycle rules move to colder storage. Must equal utils.tables.SOURCE_TABLES (a test checks)."
  type        = list(string)
  default = [
    "address", "counterparty", "currency", "department", "design", "staff",
    "sales_order", "purchase_order", "payment_type", "transaction", "payment",
  ]
}

variable "warehouse_tables" {
  description = "The star-schema tables: the processed bucket's table prefixes (<table>/) the lifecycle rules move to colder storage. Must equal utils.warehouse.WAREHOUSE_TABLES (a test checks)."
  type        = list(string)
  default = [
    "dim_date", "dim_staff", "dim_location", "dim_currency", "dim_design", "dim_counterparty",
    "dim_transaction", "dim_payment_type", "fact_sales_order", "fact_purchase_order", "fact_payment",
  ]
}

variable "transition_to_ia_days" {
  description = "Days after which table data objects move to S3 Standard-IA (Parquet batches are read once by the next stage, then rarely)."
  type        = number
  default     = 30
}

variable "transition_to_glacier_ir_days" {
  description = "Days after which table data objects move to S3 Glacier Instant Retrieval (still readable in milliseconds for a rebuild)."
  type        = number
  default     = 180
}

variable "noncurrent_version_expiration_days" {
  description = "Days a superseded object version is kept (only the _state/ pointers are ever overwritten)."
  type        = number
  default     = 90
}

variable "force_destroy_buckets" {
  description = "true = `terraform destroy` deletes the ingest and processed buckets with every object and version in them (the pipeline's whole history). Default false: destroy stops at a non-empty bucket. Apply once with true before a final DESTROY_IMMUTABLE=1 teardown."
  type        = bool
  default     = false
}
