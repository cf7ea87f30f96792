"""`gistify serve`: load the scorer (a missing model is a one-line error), then run the proxy under uvicorn;
`gistify serve stats`: a running proxy's savings as a table."""

from __future__ import annotations

import argparse

from gistify.serve.settings import Settings


def main(args: argparse.Namespace) -> int:
    """Run the proxy until interrupted (the body of `gistify serve`); `gistify serve stats` prints a running
    proxy's savings instead."""
    if getattr(args, "action", None) == "stats":
        import os

        from gistify.serve.stats import main as stats_main

        return stats_main(args.url, args.api_key or os.environ.get("GISTIFY_API_KEY"))
    settings = Settings.from_args(args)
    try:
        import uvicorn

        from gistify.serve.app import create_app
    except ImportError as e:
        raise ValueError(f"gistify serve needs its extra ({e.name} is missing): pip install 'gistify[serve]'") from None
    import logging

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per upstream call is noise
    from transformers.utils import logging as hf_logging

    import gistify

    hf_logging.disable_progress_bar()  # no "Loading weights" bar in a server's log
    scorer = gistify.Scorer.load(settings.model)  # here, so that a missing model is a one-line error (exit 3)
    # uvicorn's access log is off: the app logs one line per request itself, without headers or bodies
    uvicorn.run(
        create_app(settings, scorer=scorer),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    return 0
