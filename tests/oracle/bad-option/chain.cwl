# A misspelt prun option: both PanDA (whose parser exits) and cwlbridge refuse the chain.
cwlVersion: v1.0
class: Workflow
inputs:
  data: string
outputs:
  out: {type: string, outputSource: skim/outDS}
steps:
  skim:
    run: prun
    in:
      opt_inDS: data
      opt_exec: {default: "skim.sh %IN"}
      opt_args: {default: "--outputs skim.root --nFilesPerJobb 3"}
    out: [outDS]
