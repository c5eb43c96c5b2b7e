# Every combination of two lists (flat_crossproduct): PanDA ignores scatterMethod and zips.
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
    scatterMethod: flat_crossproduct
    in:
      opt_inDS: datasets
      opt_exec: commands
      opt_args: {default: "--outputs scan.txt"}
    out: [outDS]
