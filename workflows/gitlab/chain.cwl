# Produce ntuples on the grid, then hand them to a GitLab CI pipeline that makes plots.
cwlVersion: v1.0
class: Workflow
inputs:
  data: string
outputs:
  pipeline:
    type: string
    outputSource: plots/outDS
steps:
  ntuple:
    run: prun
    in:
      opt_inDS: data
      opt_exec: {default: "./ntuple.sh %IN ntup.root"}
      opt_args: {default: "--outputs ntup.root"}
    out: [outDS]
  plots:
    run: gitlab
    in:
      opt_inDS: ntuple/outDS
      opt_api: {default: "https://gitlab.cern.ch/api/v4/projects"}
      opt_projectID: {default: 123456}
      opt_ref: {default: "main"}
      opt_triggerToken: {default: "GITLAB_TRIGGER_TOKEN"}
      opt_accessToken: {default: "GITLAB_ACCESS_TOKEN"}
      opt_site: {default: "CERN"}
      opt_input_location: {default: "/eos/user/j/jdoe/plots"}
    out: [outDS]
