"""`python -m psabridge ...`: the same command line as the `psabridge` console script."""

from psabridge.cli import cli

if __name__ == "__main__":
    cli(prog_name="psabridge")
