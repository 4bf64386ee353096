"""`run(cfg)`: build a session, run its protocol, write summary.json."""
from __future__ import annotations

import resource
import signal
import sys
import threading
import time

from .config import Config
from .loggers import make_logger
from .protocols import get_protocol
from .runlog import RunDir
from .session import build_session


def run(cfg: Config, resume: bool = False) -> dict:
    """Run (or, with resume=True, continue) the configured protocol; returns and writes summary.json."""
    t0 = time.perf_counter()
    protocol = get_protocol(cfg.protocol.protocol)
    out = RunDir(cfg.run.out, cfg, resume=resume)
    sess = None
    previous = _catch_ctrl_c(out)
    try:
        out.logger = make_logger(cfg, out.path)
        sess = build_session(cfg, out, resume)
        result = protocol(sess)
        summary = {**result, "reward": cfg.reward.reward, "answer_type": sess.answer_type, "model": cfg.model.model,
                   "data": cfg.data.data, "protocol": cfg.protocol.protocol, "seed": cfg.run.seed,
                   "seconds": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb()}
        out.write_json("summary.json", summary)
        return summary
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        out.close()
        if sess is not None and hasattr(sess.policy, "close"):
            sess.policy.close()
        if cfg.run.report and not isinstance(sys.exc_info()[1], KeyboardInterrupt):  # a crashed run gets one too
            from .report import report_quietly

            report_quietly(out.path)


def _catch_ctrl_c(out: RunDir):
    """Ctrl-C that is never lost. Python drops a KeyboardInterrupt raised while it runs a finalizer or a callback
    from C ("Exception ignored in ..."), and the run then went on to finish as if never interrupted (seen once in the
    test suite). So the handler also marks the press on the run folder, whose next row written raises it again.
    Returns the previous handler (None off the main thread, where signals cannot be caught)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def on_sigint(signum, frame):
        out.interrupt_pending = True
        raise KeyboardInterrupt

    return signal.signal(signal.SIGINT, on_sigint)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)
