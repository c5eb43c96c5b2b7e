cwlVersion: v1.0
class: Workflow
inputs:
  seed: string
  param_alpha: {type: float, default: 0.5}
  param_beta: {type: int, default: 2}
outputs:
  outDS: {type: string, outputSource: fit/outDS}
steps:
  fit:
    run: prun
    in:
      opt_inDS: seed
      opt_exec: {default: "fit.sh %IN %{alpha} %{beta} %{i}"}
      opt_args: {default: "--outputs fit.txt,hist.root --nJobs 1"}
    out: [outDS]
  decide:
    run: junction
    in:
      opt_inDS: fit/outDS
      opt_inDsType: {default: hist.root}
      opt_exec: {default: "decide.sh %{DS1} %{alpha} %{beta}"}
      opt_args: {default: "--outputs summary.json"}
    out: []
