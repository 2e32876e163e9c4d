import sys

from fsad.cli import main

sys.exit(main())
