cwlVersion: v1.0
class: CommandLineTool
doc: "A one-job task that runs a REANA workflow (cwlbridge submits it to REANA natively)."
baseCommand: reana
inputs:
  opt_inDS:
    type: ["null", string, "string[]"]
    doc: "dataset(s) that fill %{DSn}; no --inDS is passed"
  opt_inDsType:
    type: ["null", string, "string[]"]
    doc: "parent output type(s) to consume"
  opt_exec:
    type: ["null", string]
    doc: "usually: cwlbridge reana job --spec ... --set key=%{DS1} --tar out.tar"
  opt_args:
    type: ["null", string]
    doc: "other prun options, e.g. --outputs out.tar --useSecrets"
  opt_containerImage:
    type: ["null", string]
    doc: "--containerImage"
outputs:
  outDS:
    type: string
    doc: "the step's task name; its datasets are {task}_{type}/"
