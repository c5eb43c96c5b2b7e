cwlVersion: v1.0
class: Workflow
inputs:
  dataset: string
outputs:
  outDS: {type: string, outputSource: sel/outDS}
steps:
  sel:
    run: prun
    in:
      opt_inDS: dataset
      opt_exec: {default: "sel.sh %IN"}
      opt_args: {default: "--outputs sel.root"}
    out: [outDS]
