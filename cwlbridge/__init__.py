"""cwlbridge: validate, plan and run PanDA pchain CWL chains, with REANA steps."""

__version__ = "0.1.0"
