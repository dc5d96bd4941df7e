"""`python -m seqvault.model eval ...`: the model commands without the main CLI."""

from .cli import model_cli

model_cli(prog_name="python -m seqvault.model")
