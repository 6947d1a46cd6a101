"""``python -m services.gateway --config FILE``: the same as ``switchboard gateway``."""

from services.gateway.server import main

raise SystemExit(main())
