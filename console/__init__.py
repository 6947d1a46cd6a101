"""The on-call console (Textual TUI) and the ``switchboard`` command line."""
