"""One module per `hexray` subcommand; see `hexray.cli`."""
