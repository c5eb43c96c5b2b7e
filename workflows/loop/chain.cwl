# Iterative refinement: the body runs again while its junction says to_continue,
# with the loop variable alpha updated from the junction's results.json.
cwlVersion: v1.0
class: Workflow
requirements:
  SubworkflowFeatureRequirement: {}
inputs:
  data: string
outputs:
  final:
    type: string
    outputSource: refine/outDS
steps:
  start:
    run: prun
    in:
      opt_inDS: data
      opt_exec: {default: "./prepare.sh %IN prepared.txt"}
      opt_args: {default: "--outputs prepared.txt"}
    out: [outDS]
  refine:
    run: refine_body.cwl
    in:
      seed: start/outDS
    out: [outDS]
    hints: [loop]
