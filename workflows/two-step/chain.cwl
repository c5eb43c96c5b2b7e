# Two prun steps: generate events, then a histogramming step that streams from it.
cwlVersion: v1.0
class: Workflow
inputs: {}
outputs:
  hists:
    type: string
    outputSource: ana/outDS
steps:
  gen:
    run: prun
    in:
      opt_exec: {default: "echo %RNDM:10 > seed.txt; ./gen.sh seed.txt evt.txt"}
      opt_args: {default: "--outputs evt.txt --nJobs 3"}
    out: [outDS]
  ana:
    run: prun
    in:
      opt_inDS: gen/outDS
      opt_exec: {default: "./ana.sh %IN hist.txt"}
      opt_args: {default: "--outputs hist.txt --nFilesPerJob 1"}
    out: [outDS]
