import sys

from scripts.devservices.cli import main

sys.exit(main(sys.argv[1:]))
