# Scatter a selection sub-workflow over signal mass points, then merge the results.
cwlVersion: v1.0
class: Workflow
requirements:
  ScatterFeatureRequirement: {}
  SubworkflowFeatureRequirement: {}
inputs:
  mass_points: string[]
  ntuples: string[]
outputs:
  merged:
    type: string
    outputSource: merge/outDS
steps:
  point:
    run: select.cwl
    scatter: [mass, dataset]
    scatterMethod: dotproduct
    in:
      mass: mass_points
      dataset: ntuples
    out: [outDS]
  merge:
    run: prun
    in:
      opt_inDS: point/outDS
      opt_exec: {default: "hadd merged.root %IN"}
      opt_args: {default: "--outputs merged.root --nFilesPerJob 100"}
    out: [outDS]
