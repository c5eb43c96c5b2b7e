cwlVersion: v1.0
class: Workflow
inputs:
  dataset: string
outputs: []
steps:
  skim:
    run: prun
    in:
      opt_inDS: dataset
      opt_exec: {default: "skim.sh %IN"}
      opt_args: {default: "--outputs skim.root"}
    out: [outDS]
  sel:
    run: prun
    in:
      opt_inDS: skim/outDS
      opt_exec: {default: "sel.sh %IN"}
      opt_args: {default: "--outputs sel.root"}
    out: [outDS]
