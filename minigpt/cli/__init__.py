"""The `minigpt` command line: one subcommand per module, sharing the options of options.py."""
