"""dind-supervisor: the init and supervisor for Docker-in-Docker."""

# As a container's PID 1, every signal without a handler is dropped by the
# kernel, and a `docker stop` arriving while the interpreter starts would be
# lost. So the very first statements of our code (this package is imported
# before anything else of ours, by the console script and by `python -m`)
# block them; init.py takes them from there with sigtimedwait. `_signal` is
# built in: `signal` would cost ~9 ms of imports first. Other processes are
# untouched, and the exec'd-program path unblocks before its exec.
import os as _os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if _os.getpid() == 1:
    if TYPE_CHECKING:
        import signal as _signal
    else:
        import _signal

    _signal.pthread_sigmask(
        _signal.SIG_BLOCK,
        (
            _signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP, _signal.SIGQUIT,
            _signal.SIGUSR1, _signal.SIGUSR2, _signal.SIGCHLD, _signal.SIGIO,
        ),
    )

__version__ = "0.1.0"
