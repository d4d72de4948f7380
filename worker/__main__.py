"""``python -m worker [--parent PID]``: one worker process with settings from ``ADAPRUNER_*`` variables.
With ``--parent``, the worker stops (handing its job back) when that process dies."""

import argparse

from worker.main import main

parser = argparse.ArgumentParser(prog="python -m worker")
parser.add_argument("--parent", type=int, default=None, help="stop when the process with this pid dies")
main(parent=parser.parse_args().parent)
