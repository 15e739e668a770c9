"""The command line's commands, assembled; `main` runs them as `worker-cli` or `python -m streams.cli`."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import typer

# Typer 0.27 (pinned) vendors its own click: its exceptions live here, not in `click`.
from typer._click.exceptions import Abort, ClickException, NoArgsIsHelpError, UsageError
from typer.main import get_command

from streams.cli import addresses, ads, dlq, jobs, publish

PROG = "python -m streams.cli"

app = typer.Typer(
    help="Publish jobs; see what happened to them; manage dead letters and suppressions; erase an address.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
publish.register(app)
app.add_typer(dlq.app, name="dlq")
app.add_typer(jobs.job_app, name="job")
app.command("jobs")(jobs.jobs)
app.command("erase")(addresses.erase)
app.add_typer(addresses.suppressions_app, name="suppressions")
app.add_typer(ads.app, name="ads")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status (0 done, 1 not found or unreachable, 2 invalid input)."""
    _quiet_kafka_client()
    command = get_command(app)
    args = list(argv) if argv is not None else None
    try:
        status = command.main(args=args, prog_name=PROG, standalone_mode=False)
    except NoArgsIsHelpError as error:
        return error.exit_code  # the help is printed already, as for `--help`
    except ClickException as error:
        # One line, not a box: `python -m streams.cli jobs: Missing option '--to'.`
        where = error.ctx.command_path if isinstance(error, UsageError) and error.ctx else PROG
        sys.stderr.write(f"{where}: {error.format_message()}\n")
        return error.exit_code
    except Abort:
        sys.stderr.write("aborted\n")
        return 130
    return status if isinstance(status, int) else 0


def _quiet_kafka_client() -> None:
    """The commands say in one line that Kafka can't be reached; aiokafka would say it once per
    connection attempt, and asyncio once per client whose start failed (never stopped)."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    logging.getLogger("asyncio").addFilter(_UnclosedKafkaClient())


class _UnclosedKafkaClient(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Unclosed AIOKafka")
