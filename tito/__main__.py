"""Allow ``python -m tito ...``."""
import sys

from tito.cli import main

if __name__ == "__main__":
    sys.exit(main())
