# The optional VPC (README.md, "Network topologies"). With subnet_ids empty (the default) none of this
# exists and the functions run outside a VPC. With subnet_ids set, the functions get ENIs in those private
# subnets and reach:
#   - the databases directly (security_group_ids must allow egress to them on 5432);
#   - S3 through a gateway endpoint and Secrets Manager through an interface endpoint (created here unless
#     create_vpc_endpoints = false, in which case the subnets need a NAT gateway you provide).
# The functions call no other AWS API: SNS is published to by the state machine, which does not run in the
# VPC; logs and traces are delivered by the Lambda service.
locals {
  in_vpc        = length(var.subnet_ids) > 0
  vpc_endpoints = local.in_vpc && var.create_vpc_endpoints
}

data "aws_subnet" "function" {
  for_each = toset(var.subnet_ids)

  id = each.value
}

locals {
  vpc_ids = distinct([for subnet in data.aws_subnet.function : subnet.vpc_id])
  vpc_id  = local.in_vpc ? local.vpc_ids[0] : null
  # An interface endpoint takes at most one subnet per availability zone.
  endpoint_subnet_ids = [
    for zone, ids in { for id, subnet in data.aws_subnet.function : subnet.availability_zone => id... } : sort(ids)[0]
  ]
}

# Lambda creates and deletes the functions' network interfaces with the execution role.
data "aws_iam_policy_document" "vpc_access" {
  #checkov:skip=CKV_AWS_111:Lambda's VPC networking needs these EC2 actions on "*" in the execution role (as AWS's AWSLambdaVPCAccessExecutionRole grants them); only attached when subnet_ids is set
  #checkov:skip=CKV_AWS_356:Lambda's VPC networking needs these EC2 actions on "*" in the execution role (as AWS's AWSLambdaVPCAccessExecutionRole grants them); only attached when subnet_ids is set
  statement {
    sid = "ManageFunctionNetworkInterfaces"
    actions = [
      "ec2:CreateNetworkInterface",
      "ec2:DescribeNetworkInterfaces",
      "ec2:DescribeSubnets",
      "ec2:DeleteNetworkInterface",
      "ec2:AssignPrivateIpAddresses",
      "ec2:UnassignPrivateIpAddresses",
    ]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "vpc_access" {
  for_each = local.in_vpc ? local.functions : {}

  name   = "${local.function_names[each.key]}-vpc-access"
  role   = aws_iam_role.function[each.key].id
  policy = data.aws_iam_policy_document.vpc_access.json
}

resource "aws_security_group" "vpc_endpoints" {
  count = local.vpc_endpoints ? 1 : 0

  name_prefix = "${var.project}-vpc-endpoints-"
  description = "ToteSys: HTTPS from the pipeline functions to the Secrets Manager interface endpoint"
  vpc_id      = local.vpc_id

  lifecycle {
    precondition {
      condition     = length(local.vpc_ids) == 1
      error_message = "subnet_ids must all belong to one VPC."
    }
  }
}

resource "aws_vpc_security_group_ingress_rule" "vpc_endpoints_https" {
  for_each = local.vpc_endpoints ? toset(var.security_group_ids) : toset([])

  security_group_id            = aws_security_group.vpc_endpoints[0].id
  description                  = "HTTPS from the pipeline functions (security group ${each.value})"
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
}

resource "aws_vpc_endpoint" "s3" {
  count = local.vpc_endpoints ? 1 : 0

  vpc_id            = local.vpc_id
  service_name      = "com.amazonaws.${var.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = var.vpc_route_table_ids

  lifecycle {
    precondition {
      condition     = length(var.vpc_route_table_ids) > 0
      error_message = "Set vpc_route_table_ids (the route tables of subnet_ids) for the S3 gateway endpoint, or create_vpc_endpoints = false with a NAT gateway."
    }
  }
}

resource "aws_vpc_endpoint" "secretsmanager" {
  count = local.vpc_endpoints ? 1 : 0

  vpc_id              = local.vpc_id
  service_name        = "com.amazonaws.${var.region}.secretsmanager"
  vpc_endpoint_type   = "Interface"
  subnet_ids          = local.endpoint_subnet_ids
  security_group_ids  = [aws_security_group.vpc_endpoints[0].id]
  private_dns_enabled = true # the SDK's default host name resolves to the endpoint (needs VPC DNS support)
}
