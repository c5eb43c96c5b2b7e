from cwlbridge.cli import run

run()
