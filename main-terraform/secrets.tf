# The secrets belong to immutable-terraform. The functions get secret *names* (environment) and IAM on the
# secret *ARNs*; only the alert address is read here, to subscribe it to the alert topic.
data "aws_ssm_parameter" "totesys_secret_name" {
  name = "${var.ssm_prefix}/totesys-secret-name"
}

data "aws_ssm_parameter" "totesys_secret_arn" {
  name = "${var.ssm_prefix}/totesys-secret-arn"
}

data "aws_ssm_parameter" "warehouse_secret_name" {
  name = "${var.ssm_prefix}/warehouse-secret-name"
}

data "aws_ssm_parameter" "warehouse_secret_arn" {
  name = "${var.ssm_prefix}/warehouse-secret-arn"
}

data "aws_ssm_parameter" "alert_email_secret_arn" {
  name = "${var.ssm_prefix}/alert-email-secret-arn"
}

data "aws_secretsmanager_secret_version" "alert_email" {
  secret_id = data.aws_ssm_parameter.alert_email_secret_arn.value
}

locals {
  totesys_secret_name   = data.aws_ssm_parameter.totesys_secret_name.value
  totesys_secret_arn    = data.aws_ssm_parameter.totesys_secret_arn.value
  warehouse_secret_name = data.aws_ssm_parameter.warehouse_secret_name.value
  warehouse_secret_arn  = data.aws_ssm_parameter.warehouse_secret_arn.value
  # sensitive: keeps the address out of plan output and CI logs.
  alert_email = sensitive(trimspace(data.aws_secretsmanager_secret_version.alert_email.secret_string))
}
