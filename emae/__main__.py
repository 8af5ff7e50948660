import sys

from emae.cli import main

if __name__ == "__main__":
    sys.exit(main())
