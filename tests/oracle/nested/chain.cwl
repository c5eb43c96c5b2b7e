# A sub-workflow inside a sub-workflow, with workflow variables (one a list), %{i} outside a
# loop, and a step downstream of the outer sub-workflow.
cwlVersion: v1.0
class: Workflow
requirements:
  SubworkflowFeatureRequirement: {}
inputs:
  labels: string[]
  tag: string
outputs:
  report: {type: string, outputSource: report/outDS}
steps:
  prep:
    run: prun
    in:
      opt_exec: {default: "prep.sh"}
      opt_args: {default: "--outputs prep.root --nJobs 2"}
    out: [outDS]
  analysis:
    run: outer.cwl
    in:
      seed: prep/outDS
      labels: labels
      tag: tag
    out: [outDS]
  report:
    run: prun
    in:
      opt_inDS: analysis/outDS
      opt_exec: {default: "report.sh %IN"}
      opt_args: {default: "--outputs report.txt --nJobs 1"}
    out: [outDS]
