"""python -m gateway.cli: the mcp-gateway command."""

from . import main

raise SystemExit(main())
