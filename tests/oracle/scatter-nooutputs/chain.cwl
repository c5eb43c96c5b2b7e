# A scattered sub-workflow that declares no outputs (downstream gets every leaf, as in
# PanDA), and a conditional step on it.
cwlVersion: v1.2
class: Workflow
requirements:
  InlineJavascriptRequirement: {}
  ScatterFeatureRequirement: {}
  SubworkflowFeatureRequirement: {}
inputs:
  datasets: string[]
outputs:
  merged: {type: string, outputSource: merge/outDS}
  check: {type: string, outputSource: check/outDS}
steps:
  point:
    run: body.cwl
    scatter: [dataset]
    in:
      dataset: datasets
    out: [outDS]
  merge:
    run: prun
    in:
      opt_inDS: point/outDS
      opt_exec: {default: "hadd merged.root %IN"}
      opt_args: {default: "--outputs merged.root"}
    out: [outDS]
  check:
    run: prun
    in:
      opt_inDS: point/outDS
      opt_exec: {default: "check.sh %IN"}
      opt_args: {default: "--outputs check.txt --nJobs 1"}
    out: [outDS]
    when: $(self.opt_inDS)
