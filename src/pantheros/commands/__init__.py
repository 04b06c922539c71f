"""Command-line handlers: each takes the parsed arguments, calls the domain packages and prints."""
