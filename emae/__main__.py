import sys

from emae.cli import main

sys.exit(main())
