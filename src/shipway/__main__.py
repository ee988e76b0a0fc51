"""`python -m shipway` runs the command line."""

from shipway.cli import main

main()
