cwlVersion: v1.0
class: Workflow
inputs:
  src: string
  tag: string
outputs:
  outDS: {type: string, outputSource: fit/outDS}
steps:
  fit:
    run: prun
    in:
      opt_inDS: src
      opt_exec: {default: "fit.sh %IN %{tag}"}
      opt_args: {default: "--outputs fit.root"}
    out: [outDS]
  plot:
    run: prun
    in:
      opt_inDS: fit/outDS
      opt_exec: {default: "plot.sh %IN"}
      opt_args: {default: "--outputs plot.png"}
    out: [outDS]
