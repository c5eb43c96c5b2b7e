# dotproduct over lists of different lengths, the shorter first: PanDA silently drops the
# extra element (with the longer list first its converter fails instead).
cwlVersion: v1.0
class: Workflow
requirements:
  ScatterFeatureRequirement: {}
inputs:
  datasets: string[]
  commands: string[]
outputs:
  out: {type: string, outputSource: scan/outDS}
steps:
  scan:
    run: prun
    scatter: [opt_inDS, opt_exec]
    scatterMethod: dotproduct
    in:
      opt_inDS: datasets
      opt_exec: commands
      opt_args: {default: "--outputs scan.txt"}
    out: [outDS]
