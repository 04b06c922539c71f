"""The command line's handlers: one module per area, each the top floor (docs/architecture.md)."""
