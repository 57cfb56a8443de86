"""One module per `mmdit-scale` subcommand (see launcher/cli.py for the contract)."""
