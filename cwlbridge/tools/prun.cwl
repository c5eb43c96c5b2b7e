cwlVersion: v1.0
class: CommandLineTool
doc: "A PanDA user task built the way prun builds it."
baseCommand: prun
inputs:
  opt_inDS:
    type: ["null", string, "string[]"]
    doc: "input dataset(s): a workflow input verbatim, or parent outputs"
  opt_inDsType:
    type: ["null", string, "string[]"]
    doc: "parent output type(s) to consume; default: the parent's first --outputs type"
  opt_secondaryDSs:
    type: ["null", string, "string[]"]
    doc: "parent outputs that feed %{SECDSn}"
  opt_secondaryDsTypes:
    type: ["null", string, "string[]"]
    doc: "output types for opt_secondaryDSs"
  opt_exec:
    type: ["null", string]
    doc: "the --exec string; %{DSn}, %{SECDSn} and %IN placeholders allowed"
  opt_args:
    type: ["null", string]
    doc: "every other prun option, as one string"
  opt_useAthenaPackages:
    type: ["null", boolean]
    doc: "build with the Athena template"
  opt_containerImage:
    type: ["null", string]
    doc: "--containerImage"
outputs:
  outDS:
    type: string
    doc: "the step's task name; its datasets are {task}_{type}/"
