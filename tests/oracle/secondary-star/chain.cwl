# %{SECDS*}: all secondary datasets at once.
cwlVersion: v1.0
class: Workflow
requirements:
  MultipleInputFeatureRequirement: {}
inputs:
  data: string
outputs:
  out: {type: string, outputSource: combine/outDS}
steps:
  sig:
    run: prun
    in:
      opt_inDS: data
      opt_exec: {default: "sig.sh %IN"}
      opt_args: {default: "--outputs sig.root"}
    out: [outDS]
  bkg1:
    run: prun
    in:
      opt_exec: {default: "bkg.sh 1"}
      opt_args: {default: "--outputs bkg.root --nJobs 1"}
    out: [outDS]
  bkg2:
    run: prun
    in:
      opt_exec: {default: "bkg.sh 2"}
      opt_args: {default: "--outputs bkg.root --nJobs 1"}
    out: [outDS]
  combine:
    run: prun
    in:
      opt_inDS: sig/outDS
      opt_secondaryDSs: [bkg1/outDS, bkg2/outDS]
      opt_exec: {default: "combine.sh %IN %{SECDS*}"}
      opt_args: {default: "--outputs combined.root"}
    out: [outDS]
