# The worked example of pchain: a skim, toy generation, and a fit that combines both.
cwlVersion: v1.0
class: Workflow
requirements:
  MultipleInputFeatureRequirement: {}
inputs:
  raw: string
outputs:
  result:
    type: string
    outputSource: fit/outDS
steps:
  skim:
    run: prun
    in:
      opt_inDS: raw
      opt_exec: {default: "skim.sh %IN"}
      opt_args: {default: "--outputs ntup.root,hist.root --nFilesPerJob 10"}
    out: [outDS]
  toys:
    run: prun
    in:
      opt_exec: {default: "toys.sh %RNDM:100"}
      opt_args: {default: "--outputs toys.root --nJobs 5"}
    out: [outDS]
  fit:
    run: reana
    in:
      opt_inDS: [skim/outDS, toys/outDS]
      opt_inDsType: {default: [hist.root, toys.root]}
      opt_exec: {default: "fit.sh %{DS1} %{DS2}"}
      opt_args: {default: "--outputs fit.tgz --useSecrets"}
      opt_containerImage: {default: "docker://python:3.11"}
    out: [outDS]
