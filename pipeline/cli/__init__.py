"""The ``streetveil`` command line: parse, build config objects, call one library function,
map errors to exit codes in one place (``main``).

Keep this package import-light: ``streetveil --help`` must not import torch, dask or
onnxruntime, so subcommands import the library inside their function bodies.
"""

from __future__ import annotations

import logging

import click

from pipeline.cli import capture_cmds, governance_cmds, job_cmds, redact_cmds, session_cmds


def _version() -> str:
    from capture import __version__

    return __version__


def _setup_logging(verbose: int, quiet: int) -> None:
    level = logging.WARNING - 10 * verbose + 10 * quiet
    level = max(logging.DEBUG, min(logging.CRITICAL, level))
    from rich.logging import RichHandler

    handler = RichHandler(console=None, show_path=False, rich_tracebacks=False, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Dask and friends are chatty at INFO; keep them one notch quieter than ours.
    for noisy in ("distributed", "asyncio", "tornado", "bokeh"):
        logging.getLogger(noisy).setLevel(max(level + 10, logging.WARNING))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(version=_version(), prog_name="streetveil", message="%(prog)s %(version)s")
@click.option("-v", "--verbose", count=True, help="More log output (repeat for debug).")
@click.option("-q", "--quiet", count=True, help="Less log output.")
def cli(verbose: int, quiet: int) -> None:
    """streetveil: capture street imagery from a vehicle, redact faces and licence plates,
    and publish infrastructure-only imagery for GIS.

    \b
    Driver:      streetveil capture run --config configs/vehicle.toml
    Operations:  streetveil run SESSION... --out PUBLISH_DIR
                 streetveil audit verify PUBLISH_DIR
                 streetveil purge SESSIONS_ROOT --raw-older-than 7d
    GIS team:    load PUBLISH_DIR/<session>/frames.geojson and images/ as they are.
    """
    _setup_logging(verbose, quiet)


for _mod in (session_cmds, capture_cmds, redact_cmds, job_cmds, governance_cmds):
    _mod.register(cli)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and turn every outcome into an exit code."""
    from pipeline.errors import EXIT_INTERRUPTED, EXIT_USAGE, exit_code_for

    try:
        cli.main(args=argv, prog_name="streetveil", standalone_mode=False)
    except click.exceptions.Exit as e:
        return int(e.exit_code or 0)
    except click.Abort:
        click.echo("interrupted", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as e:
        e.show()
        return EXIT_USAGE if e.exit_code == 2 else int(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return EXIT_INTERRUPTED
    except Exception as e:
        code = exit_code_for(e)
        if code in (1, 2) and _is_user_error(e):
            click.echo(f"error: {e}", err=True)
            _print_details(e)
        else:
            logging.getLogger("streetveil").exception("internal error")
            click.echo(f"internal error: {e!r} (please report it with the log above)", err=True)
            code = 1
        return code
    return 0


def _is_user_error(e: BaseException) -> bool:
    from capture.errors import CaptureError
    from pipeline.errors import PipelineError
    from redact.errors import RedactError

    return isinstance(e, CaptureError | RedactError | PipelineError | FileNotFoundError | PermissionError)


def _print_details(e: BaseException) -> None:
    problems = getattr(e, "problems", None)
    if problems:
        for p in problems:
            click.echo(f"  - {p}", err=True)
