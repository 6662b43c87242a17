import sys

from rfcn.cli import main

sys.exit(main())
