# Credentials from the git-ignored files at the repository root (templates: *.example). The values end up in
# this stack's state, which is why the state bucket is encrypted and private; they never appear in outputs.
locals {
  secrets = {
    totesys = {
      name        = "${var.secret_name_prefix}/db-credentials"
      file        = "${var.credentials_dir}/db_credentials.json"
      description = "totesys (source) PostgreSQL: JSON with host, port, database, user, password"
    }
    warehouse = {
      name        = "${var.secret_name_prefix}/warehouse-credentials"
      file        = "${var.credentials_dir}/warehouse_credentials.json"
      description = "warehouse PostgreSQL: JSON with host, port, database, user, password"
    }
    alert_email = {
      name        = "${var.secret_name_prefix}/alert-email"
      file        = "${var.credentials_dir}/email.txt"
      description = "address that receives the pipeline's failure alerts"
    }
  }
}

resource "aws_secretsmanager_secret" "this" {
  #checkov:skip=CKV2_AWS_57:the credentials belong to databases this project does not administer; rotate them at the source and re-apply
  for_each = local.secrets

  name        = each.value.name
  description = each.value.description
  kms_key_id  = aws_kms_key.data.arn
}

resource "aws_secretsmanager_secret_version" "this" {
  for_each = local.secrets

  secret_id = aws_secretsmanager_secret.this[each.key].id
  # The JSON files are re-encoded so a malformed file fails the plan here, not the first Lambda run.
  secret_string = each.key == "alert_email" ? trimspace(file(each.value.file)) : jsonencode(jsondecode(file(each.value.file)))
}
