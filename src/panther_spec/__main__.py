"""`python -m panther_spec`: the `panther-spec` command."""

from panther_spec.cli import main

raise SystemExit(main())
