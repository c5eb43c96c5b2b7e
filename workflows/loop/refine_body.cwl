# One iteration: fit with the current alpha, then decide whether to go on.
cwlVersion: v1.0
class: Workflow
inputs:
  seed: string
  param_alpha:
    type: float
    default: 0.5
outputs:
  outDS:
    type: string
    outputSource: fit/outDS
steps:
  fit:
    run: prun
    in:
      opt_inDS: seed
      opt_exec: {default: "./fit.sh %IN %{alpha} %{i} fit.txt"}
      opt_args: {default: "--outputs fit.txt --nJobs 1"}
    out: [outDS]
  decide:
    run: junction
    in:
      opt_inDS: fit/outDS
      opt_exec: {default: "./decide.sh %{DS1} %{alpha} %{i}"}
    out: []
