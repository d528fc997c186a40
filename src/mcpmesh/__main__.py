"""`python -m mcpmesh`."""

from mcpmesh.cli.main import main

raise SystemExit(main())
