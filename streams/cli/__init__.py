"""Command line: publish jobs, see what happened to them, manage dead letters, erase an address.

python -m streams.cli send-otp --to ada@example.com --code 123456
python -m streams.cli welcome --to ada@example.com --name "Ada Lovelace"
python -m streams.cli verify-link --to ada@example.com --url https://app.example.com/verify?t=abc
python -m streams.cli job show otp-42 [--json]
python -m streams.cli jobs --to ada@example.com --since 1h [--json]
python -m streams.cli dlq list [--json]
python -m streams.cli dlq show 0:12 [--raw] [--json]
python -m streams.cli dlq replay --reason attempts-exhausted --dry-run
python -m streams.cli erase --email ada@example.com
python -m streams.cli suppressions list [--json] | add ADDRESS [--reason manual] | remove ADDRESS

Results go to stdout, errors to stderr as one line; `--json` gives scripts one document.
The console script `worker-cli` is the same program.
"""

from __future__ import annotations

from streams.cli.main import main

__all__ = ["main"]
