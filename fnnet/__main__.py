import sys

from fnnet.cli import main

sys.exit(main())
