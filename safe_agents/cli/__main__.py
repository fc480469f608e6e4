"""``python -m safe_agents.cli``: the ``safe-agents`` command."""

import sys

from safe_agents.cli import main

sys.exit(main())
