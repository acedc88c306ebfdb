"""The `jip` command line: one module per subcommand; parse, call, print."""
