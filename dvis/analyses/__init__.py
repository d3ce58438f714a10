"""Zeiler & Fergus (2013) experiments: one module per experiment, each with pure batched
computation and a matplotlib (Agg) plotting function; the ``dvis`` subcommands wrap them."""
