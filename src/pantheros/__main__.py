from pantheros.main import main

raise SystemExit(main())
