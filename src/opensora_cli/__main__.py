"""`python -m opensora_cli` is the same as the `opensora` command."""

from opensora_cli.cli.app import main

raise SystemExit(main())
