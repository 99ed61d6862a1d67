# Start the pipeline on a schedule with input {} (= all eleven tables). A run that finds a previous one
# still in flight fails fast (ConcurrentRunError after retries) and the next tick catches up.
resource "aws_cloudwatch_event_rule" "schedule" {
  name                = "${var.project}-pipeline-schedule"
  description         = "Starts the ToteSys pipeline: ${var.schedule_expression}"
  schedule_expression = var.schedule_expression
  state               = var.schedule_enabled ? "ENABLED" : "DISABLED"
}

resource "aws_cloudwatch_event_target" "pipeline" {
  rule     = aws_cloudwatch_event_rule.schedule.name
  arn      = aws_sfn_state_machine.pipeline.arn
  role_arn = aws_iam_role.scheduler.arn
  input    = "{}"
}
