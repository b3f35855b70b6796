"""``python -m consumer.cli``: the ``rfmcube-cdc`` command."""

from consumer.cli.main import main

raise SystemExit(main())
