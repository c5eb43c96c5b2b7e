# The grid -> REANA recast chain: a derivation on the grid, a skim, then a REANA
# fit.  The REANA step is plain pchain: under PanDA its opt_exec runs inside a
# job container; under cwlbridge the submitter runs it natively.
cwlVersion: v1.0
class: Workflow
requirements:
  MultipleInputFeatureRequirement: {}
inputs:
  aod: string
  signal_point: string
outputs:
  result:
    type: string
    outputSource: fit/outDS
steps:
  derive:
    run: prun
    in:
      opt_inDS: aod
      opt_exec: {default: "./derive.sh %IN daod.root"}
      opt_args: {default: "--outputs daod.root --nFilesPerJob 2"}
    out: [outDS]
  skim:
    run: prun
    in:
      opt_inDS: derive/outDS
      opt_exec: {default: "./skim.sh %IN ntup.root %{signal_point}"}
      opt_args: {default: "--outputs ntup.root --nFilesPerJob 4"}
    out: [outDS]
  fit:
    run: reana
    in:
      opt_inDS: [skim/outDS]
      opt_exec:
        default: "cwlbridge reana job --spec reana-template.yaml --set inputs.parameters.did=%{DS1} --tar out.tar"
      opt_args: {default: "--outputs out.tar --useSecrets"}
      opt_containerImage: {default: "docker://ghcr.io/cwlbridge/submitter:0.1"}
    out: [outDS]
