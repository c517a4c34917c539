"""Run the gridlb command line as `python -m gridlb`."""

from gridlb.cli.main import main

raise SystemExit(main())
