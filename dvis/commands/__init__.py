"""``dvis`` subcommands: each module defines ``register(subparsers)`` adding one or more parsers
whose ``func(args) -> int | None`` runs the command. Modules are discovered, so adding a
subcommand means adding a module here."""
