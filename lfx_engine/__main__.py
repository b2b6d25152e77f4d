"""Allow ``python -m lfx_engine ...``."""
from lfx_engine.cli import main

raise SystemExit(main())
