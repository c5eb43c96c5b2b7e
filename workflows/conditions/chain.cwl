# A selection with a normal path and a failure branch: the fit runs when the
# selection was processed, the rescue step only if it failed.
cwlVersion: v1.2
class: Workflow
requirements:
  InlineJavascriptRequirement: {}
  MultipleInputFeatureRequirement: {}
inputs:
  data: string
outputs:
  fit:
    type: string
    outputSource: fit/outDS
  rescue:
    type: string
    outputSource: rescue/outDS
steps:
  sel:
    run: prun
    in:
      opt_inDS: data
      opt_exec: {default: "./select.sh %IN sel.root"}
      opt_args: {default: "--outputs sel.root"}
    out: [outDS]
  ctrl:
    run: prun
    in:
      opt_exec: {default: "./control.sh ctrl.root"}
      opt_args: {default: "--outputs ctrl.root --nJobs 1"}
    out: [outDS]
  fit:
    run: prun
    in:
      opt_inDS: [sel/outDS, ctrl/outDS]
      opt_exec: {default: "./fit.sh %{DS1} %{DS2}"}
      opt_args: {default: "--outputs fit.txt --nJobs 1"}
    out: [outDS]
    when: $(self.opt_inDS[0] && self.opt_inDS[1])
  rescue:
    run: prun
    in:
      opt_inDS: sel/outDS
      opt_exec: {default: "./notify.sh selection-failed"}
      opt_args: {default: "--outputs log.txt --nJobs 1"}
    out: [outDS]
    when: $(!self.opt_inDS)
