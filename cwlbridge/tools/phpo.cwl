cwlVersion: v1.0
class: CommandLineTool
doc: "A hyperparameter-optimisation task built the way phpo builds it."
baseCommand: phpo
inputs:
  opt_trainingDS:
    type: ["null", string]
    doc: "training dataset (a parent output)"
  opt_trainingDsType:
    type: ["null", string]
    doc: "parent output type to use as training data"
  opt_args:
    type: ["null", string]
    doc: "phpo options, as one string"
outputs:
  outDS:
    type: string
    doc: "the step's task name; its datasets are {task}_{type}/"
