"""``dvis`` subcommands: one module per command, each with ``register(subparsers)`` adding its parser
(its flags from :mod:`dvis.commands.args`, the one CLI contract) whose ``func(args) -> int | None``
parses nothing more and prints; the computation lives in the library. :data:`dvis.cli.COMMANDS`
lists the commands, grouped by purpose."""
