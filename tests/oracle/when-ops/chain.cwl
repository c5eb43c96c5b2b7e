# when conditions beyond the example: ||, && with !, indices, and a parent the condition
# does not name.
cwlVersion: v1.2
class: Workflow
requirements:
  InlineJavascriptRequirement: {}
  MultipleInputFeatureRequirement: {}
inputs:
  data: string
outputs:
  either: {type: string, outputSource: either/outDS}
  mixed: {type: string, outputSource: mixed/outDS}
  partial: {type: string, outputSource: partial/outDS}
  rescue: {type: string, outputSource: rescue/outDS}
steps:
  a:
    run: prun
    in:
      opt_inDS: data
      opt_exec: {default: "a.sh %IN"}
      opt_args: {default: "--outputs a.root"}
    out: [outDS]
  b:
    run: prun
    in:
      opt_exec: {default: "b.sh"}
      opt_args: {default: "--outputs b.root --nJobs 1"}
    out: [outDS]
  c:
    run: prun
    in:
      opt_inDS: data
      opt_exec: {default: "c.sh %IN"}
      opt_args: {default: "--outputs c.root"}
    out: [outDS]
  either:
    run: prun
    in:
      opt_inDS: [a/outDS, b/outDS]
      opt_exec: {default: "either.sh %{DS1} %{DS2}"}
      opt_args: {default: "--outputs either.txt --nJobs 1"}
    out: [outDS]
    when: $(self.opt_inDS[0] || self.opt_inDS[1])
  mixed:
    run: prun
    in:
      opt_inDS: [a/outDS, b/outDS]
      opt_exec: {default: "mixed.sh %IN"}
      opt_args: {default: "--outputs mixed.txt --nJobs 1"}
    out: [outDS]
    when: $(self.opt_inDS[0] && !self.opt_inDS[1])
  partial:
    run: prun
    in:
      opt_inDS: a/outDS
      opt_secondaryDSs: [c/outDS]
      opt_exec: {default: "partial.sh %IN %IN2"}
      opt_args: {default: "--outputs partial.txt --secondaryDSs IN2:1:%{SECDS1}"}
    out: [outDS]
    when: $(self.opt_inDS)
  rescue:
    run: reana
    in:
      opt_inDS: c/outDS
      opt_exec: {default: "rescue.sh"}
      opt_args: {default: "--outputs rescue.tgz"}
      opt_containerImage: {default: "docker://busybox"}
    out: [outDS]
    when: $(!self.opt_inDS)
