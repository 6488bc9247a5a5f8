"""The Typer command line. No torch at import: commands import their services when they run."""
