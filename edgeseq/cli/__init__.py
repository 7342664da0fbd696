"""The edgeseq CLI (typer): one module per command."""
