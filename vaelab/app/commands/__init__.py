"""The commands of `vaelab`, one module each: `add_parser(sub, add_common)` adds its subparser, `command(args)`
runs it and returns the exit status. Modules import torch and the library inside `command`, so that building the
parser (and `vaelab --help`) stays quick."""

#: The closing line of every command's --help.
EPILOG = "Docs and examples: README.md. Every option can also be set in the YAML config."
