"""``python -m worker``: one worker process with settings from ``ADAPRUNER_*`` variables."""

from worker.main import main

main()
