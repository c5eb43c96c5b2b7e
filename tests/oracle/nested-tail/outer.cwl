cwlVersion: v1.0
class: Workflow
requirements:
  SubworkflowFeatureRequirement: {}
inputs:
  seed: string
  labels: string[]
  tag: string
outputs:
  outDS: {type: string, outputSource: inner/outDS}
steps:
  book:
    run: prun
    in:
      opt_inDS: seed
      opt_exec: {default: "book.sh %IN %{tag} %{labels} %{i}"}
      opt_args: {default: "--outputs book.root"}
    out: [outDS]
  inner:
    run: inner.cwl
    in:
      src: book/outDS
      tag: tag
    out: [outDS]
  audit:
    run: prun
    in:
      opt_inDS: book/outDS
      opt_exec: {default: "audit.sh %IN"}
      opt_args: {default: "--outputs audit.txt"}
    out: [outDS]
