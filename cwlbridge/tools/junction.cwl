cwlVersion: v1.0
class: CommandLineTool
doc: "A one-job task on instant queues whose results.json steers the chain (loops, branches)."
baseCommand: junction
inputs:
  opt_inDS:
    type: ["null", string, "string[]"]
    doc: "input dataset(s)"
  opt_inDsType:
    type: ["null", string, "string[]"]
    doc: "parent output type(s) to consume"
  opt_exec:
    type: ["null", string]
    doc: "the command; it must write results.json"
  opt_args:
    type: ["null", string]
    doc: "other prun options"
  opt_containerImage:
    type: ["null", string]
    doc: "--containerImage"
outputs:
  outDS:
    type: string
    doc: "the step's task name; its datasets are {task}_{type}/"
