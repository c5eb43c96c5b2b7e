# One mass point: a skim, a cutflow, and the selection whose output is the body's result.
cwlVersion: v1.0
class: Workflow
inputs:
  mass: string
  dataset: string
outputs:
  outDS:
    type: string
    outputSource: select/outDS
steps:
  skim:
    run: prun
    in:
      opt_inDS: dataset
      opt_exec: {default: "skim.py --mass %{mass} %IN"}
      opt_args: {default: "--outputs skim.root --nFilesPerJob 5"}
    out: [outDS]
  cutflow:
    run: prun
    in:
      opt_inDS: skim/outDS
      opt_exec: {default: "cutflow.py %IN > cutflow.txt"}
      opt_args: {default: "--outputs cutflow.txt"}
    out: [outDS]
  select:
    run: prun
    in:
      opt_inDS: skim/outDS
      opt_exec: {default: "select.py --mass %{mass} %IN"}
      opt_args: {default: "--outputs sel.root"}
    out: [outDS]
