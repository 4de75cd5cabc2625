"""One module per superopt subcommand."""
