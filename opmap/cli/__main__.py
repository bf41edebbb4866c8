"""``python -m opmap.cli ...`` runs the ``opmap`` command line."""

from opmap.cli import main

raise SystemExit(main())
