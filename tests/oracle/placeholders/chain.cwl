# Dataset placeholders and output types: %{DS*}, %{SECDSn}, %{DSn} in opt_args, a scalar
# opt_inDsType with a list opt_inDS, suffix:file and wildcard outputs, a junction outside any
# loop and a reana step without inputs.
cwlVersion: v1.0
class: Workflow
requirements:
  MultipleInputFeatureRequirement: {}
inputs:
  data: string
outputs:
  pair: {type: string, outputSource: pair/outDS}
  withsec: {type: string, outputSource: withsec/outDS}
  both: {type: string, outputSource: both/outDS}
  use_tagged: {type: string, outputSource: use_tagged/outDS}
  use_glob: {type: string, outputSource: use_glob/outDS}
  check: {type: string, outputSource: check/outDS}
  report: {type: string, outputSource: report/outDS}
steps:
  sig:
    run: prun
    in:
      opt_inDS: data
      opt_exec: {default: "sig.sh %IN"}
      opt_args: {default: "--outputs sig.root,log*.txt"}
    out: [outDS]
  bkg:
    run: prun
    in:
      opt_exec: {default: "bkg.sh %RNDM:10"}
      opt_args: {default: "--outputs sig.root --nJobs 2"}
    out: [outDS]
  tagged:
    run: prun
    in:
      opt_inDS: data
      opt_containerImage: {default: "docker://alpine:3.20"}
      opt_exec: {default: "tag.sh %IN"}
      opt_args: {default: "--outputs tag:tagged.root,other.root"}
    out: [outDS]
  pair:
    run: prun
    in:
      opt_inDS: [sig/outDS, bkg/outDS]
      opt_inDsType: {default: sig.root}
      opt_exec: {default: "pair.sh %{DS*}"}
      opt_args: {default: "--outputs pair.root --nJobs 1"}
    out: [outDS]
  withsec:
    run: prun
    in:
      opt_inDS: sig/outDS
      opt_secondaryDSs: [bkg/outDS]
      opt_exec: {default: "sec.sh %IN %IN2 %{SECDS1}"}
      opt_args: {default: "--outputs sec.root --secondaryDSs IN2:1:%{SECDS1}"}
    out: [outDS]
  both:
    run: prun
    in:
      opt_inDS: [sig/outDS, bkg/outDS]
      opt_inDsType: {default: [sig.root, sig.root]}
      opt_exec: {default: "both.sh %IN %IN2"}
      opt_args: {default: "--outputs both.root --secondaryDSs IN2:1:%{DS2}"}
    out: [outDS]
  use_tagged:
    run: prun
    in:
      opt_inDS: tagged/outDS
      opt_exec: {default: "use.sh %IN"}
      opt_args: {default: "--outputs used.root"}
    out: [outDS]
  use_glob:
    run: prun
    in:
      opt_inDS: sig/outDS
      opt_inDsType: {default: "log*.txt"}
      opt_exec: {default: "logs.sh %IN"}
      opt_args: {default: "--outputs logs.txt"}
    out: [outDS]
  check:
    run: junction
    in:
      opt_inDS: pair/outDS
      opt_exec: {default: "check.sh %{DS1}"}
    out: []
  report:
    run: reana
    in:
      opt_exec: {default: "report.sh"}
      opt_args: {default: "--outputs report.tgz --useSecrets"}
      opt_containerImage: {default: "docker://busybox"}
    out: [outDS]
