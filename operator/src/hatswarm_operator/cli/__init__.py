"""The `hatswarm` command line: one module a subcommand."""
