from __future__ import annotations

import sys

from dnd_server.cli import main

sys.exit(main())
