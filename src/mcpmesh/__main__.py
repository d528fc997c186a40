"""`python -m mcpmesh`."""

from mcpmesh.cli import main

raise SystemExit(main())
