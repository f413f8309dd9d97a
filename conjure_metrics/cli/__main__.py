import sys

from conjure_metrics.cli.app import main

sys.exit(main())
