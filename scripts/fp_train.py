"""`factpatch train` without the service's dependencies.

    python scripts/fp_train.py [factpatch train arguments]

For machines whose Python has torch and transformers but not the server's stack (the lent
GPU machine's image has no pydantic or fastapi, which `factpatch`'s entry point imports).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.commands import train

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="fp_train")
    train.register(parser.add_subparsers())
    args = parser.parse_args(["train", *sys.argv[1:]])
    sys.exit(args.func(args))
