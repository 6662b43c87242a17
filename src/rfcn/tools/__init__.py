"""Command-line tools, one module per ``rfcn`` subcommand."""
