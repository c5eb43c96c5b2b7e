cwlVersion: v1.0
class: CommandLineTool
doc: "A task that triggers a GitLab CI pipeline (noInput, nEvents=1, useSecrets)."
baseCommand: gitlab
inputs:
  opt_inDS:
    type: ["null", string, "string[]"]
    doc: "datasets passed to the pipeline as input_datasets"
  opt_args:
    type: ["null", string]
    doc: "other options"
  opt_api:
    type: string
    doc: "GitLab project API URL"
  opt_projectID:
    type: [int, string]
    doc: "GitLab project id"
  opt_ref:
    type: string
    doc: "branch or tag to run"
  opt_triggerToken:
    type: string
    doc: "name of the PanDA secret holding the trigger token"
  opt_accessToken:
    type: string
    doc: "name of the PanDA secret holding the access token"
  opt_site:
    type: string
    doc: "PanDA site (queue) to run on"
  opt_input_location:
    type: ["null", string]
    doc: "where the pipeline finds its input"
outputs:
  outDS:
    type: string
    doc: "the step's task name; its datasets are {task}_{type}/"
