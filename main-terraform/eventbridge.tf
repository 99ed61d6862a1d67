# Start the pipeline on a schedule with input {} (= all eleven tables). An execution that starts while a
# previous one is still running succeeds at once without running a stage (the state machine's CheckOverlap);
# the running one processes everything pending and the next tick catches up.
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
