# A loop with two variables and a junction that has outputs of its own, and a step after it.
cwlVersion: v1.0
class: Workflow
requirements:
  SubworkflowFeatureRequirement: {}
inputs:
  data: string
outputs:
  final: {type: string, outputSource: after/outDS}
steps:
  start:
    run: prun
    in:
      opt_inDS: data
      opt_exec: {default: "prepare.sh %IN"}
      opt_args: {default: "--outputs prepared.txt"}
    out: [outDS]
  refine:
    run: body.cwl
    in:
      seed: start/outDS
    out: [outDS]
    hints: [loop]
  after:
    run: prun
    in:
      opt_inDS: refine/outDS
      opt_exec: {default: "summarise.sh %IN"}
      opt_args: {default: "--outputs summary.txt --nJobs 1"}
    out: [outDS]
