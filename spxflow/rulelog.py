"""Logging for rule scripts: the library logs through ``logging`` into the rule's log file."""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from pathlib import Path


@contextlib.contextmanager
def rule_logging(log_path: str | None, rule: str, what: str):
    """Send ``logging`` output to the rule's log file; on failure log what failed and for what.

    ``what`` names the unit of work (e.g. "source M31"); the exception is re-raised so
    Snakemake marks the job failed.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w", encoding="utf-8"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    log = logging.getLogger(f"spxflow.rule.{rule}")
    log.info("rule %s: %s", rule, what)
    try:
        yield log
    except BaseException as exc:
        log.error("rule %s failed for %s: %s: %s", rule, what, type(exc).__name__, exc)
        log.debug("%s", traceback.format_exc())
        raise
    finally:
        for h in handlers:
            h.flush()
