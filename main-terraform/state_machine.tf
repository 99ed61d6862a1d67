# The pipeline: a check that no other execution is running, then ingest -> transform -> load with retries,
# an SNS alert and a Fail on any error. The definition is the repository's ASL template (the local runner
# interprets the same file).
locals {
  state_machine_name = "${var.project}-pipeline"
  state_machine_arn  = "arn:${local.partition}:states:${var.region}:${local.account_id}:stateMachine:${local.state_machine_name}"
}

resource "aws_sfn_state_machine" "pipeline" {
  name     = local.state_machine_name
  role_arn = aws_iam_role.state_machine.arn

  # Published versions (qualified ARNs, ...:function:<name>:<version>), never $LATEST or the alias: a
  # running execution keeps the definition it started with (Step Functions), so every stage of one
  # execution runs the release that was deployed when it started, even when a deploy lands meanwhile.
  definition = templatefile("${path.module}/../state_machine/pipeline.asl.json", {
    ingest_function_arn    = aws_lambda_function.stage["ingest"].qualified_arn
    transform_function_arn = aws_lambda_function.stage["transform"].qualified_arn
    load_function_arn      = aws_lambda_function.stage["load"].qualified_arn
    alert_topic_arn        = aws_sns_topic.alerts.arn
  })

  logging_configuration {
    log_destination = "${aws_cloudwatch_log_group.state_machine.arn}:*"
    level           = "ERROR"
    # Failed executions log their input and error: payloads hold only table names, S3 keys, row counts
    # and error messages (never credentials), and they are what an on-call engineer needs first.
    include_execution_data = true
  }

  tracing_configuration {
    enabled = true
  }

  depends_on = [aws_iam_role_policy.state_machine]
}
