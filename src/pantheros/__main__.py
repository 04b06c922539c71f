from pantheros.cli import main

raise SystemExit(main())
