import sys

from livecandle.cli import main

sys.exit(main())
