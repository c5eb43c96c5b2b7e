# phpo reading its training data from a parent, with the type taken from the parent.
cwlVersion: v1.0
class: Workflow
inputs:
  raw: string
outputs:
  hpo: {type: string, outputSource: optimise/outDS}
steps:
  prepare:
    run: prun
    in:
      opt_inDS: raw
      opt_exec: {default: "prepare.sh %IN train.h5"}
      opt_args: {default: "--outputs train.h5 --nFilesPerJob 20"}
    out: [outDS]
  optimise:
    run: phpo
    in:
      opt_trainingDS: prepare/outDS
      opt_args: {default: "--loadJson search_space.json --maxPoints 20 --nParallelEvaluation 4"}
    out: [outDS]
