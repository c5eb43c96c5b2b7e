# A list source whose first element is a scattered sub-workflow (several datasets).
cwlVersion: v1.0
class: Workflow
requirements:
  ScatterFeatureRequirement: {}
  SubworkflowFeatureRequirement: {}
  MultipleInputFeatureRequirement: {}
inputs:
  datasets: string[]
outputs:
  out: {type: string, outputSource: combine/outDS}
steps:
  point:
    run: body.cwl
    scatter: [dataset]
    in:
      dataset: datasets
    out: [outDS]
  extra:
    run: prun
    in:
      opt_exec: {default: "extra.sh"}
      opt_args: {default: "--outputs extra.root --nJobs 1"}
    out: [outDS]
  combine:
    run: prun
    in:
      opt_inDS: [point/outDS, extra/outDS]
      opt_exec: {default: "combine.sh %IN"}
      opt_args: {default: "--outputs combined.root"}
    out: [outDS]
