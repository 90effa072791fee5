import sys

from spxflow.cli import main

sys.exit(main())
