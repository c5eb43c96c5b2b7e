# A condition of three terms (a group joined to a third parent).
cwlVersion: v1.2
class: Workflow
requirements:
  InlineJavascriptRequirement: {}
  MultipleInputFeatureRequirement: {}
inputs:
  data: string
outputs:
  grouped: {type: string, outputSource: grouped/outDS}
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
  grouped:
    run: prun
    in:
      opt_inDS: [a/outDS, b/outDS, c/outDS]
      opt_exec: {default: "grouped.sh %{DS*}"}
      opt_args: {default: "--outputs grouped.txt --nJobs 1"}
    out: [outDS]
    when: $((self.opt_inDS[0] || self.opt_inDS[1]) && self.opt_inDS[2])
