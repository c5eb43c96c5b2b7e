# scatter given as one name rather than a list (valid CWL): PanDA reads it letter by letter.
cwlVersion: v1.0
class: Workflow
requirements:
  ScatterFeatureRequirement: {}
inputs:
  datasets: string[]
outputs:
  merged: {type: string, outputSource: merge/outDS}
steps:
  skim:
    run: prun
    scatter: opt_inDS
    in:
      opt_inDS: datasets
      opt_exec: {default: "skim.sh %IN"}
      opt_args: {default: "--outputs skim.root --nFilesPerJob 5"}
    out: [outDS]
  merge:
    run: prun
    in:
      opt_inDS: skim/outDS
      opt_exec: {default: "hadd merged.root %IN"}
      opt_args: {default: "--outputs merged.root --nFilesPerJob 50"}
    out: [outDS]
