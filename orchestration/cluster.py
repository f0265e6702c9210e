"""The Celery executor with a pre-flight: the launch fails at once when the broker cannot be reached.

dagster-celery's own executor only meets its broker when it submits the first step; a wrong URL then
surfaces as a bare socket error ("Error 111 connecting to 127.0.0.1:6379") that does not say which
broker, or, for a host that drops packets, as a run that waits. Here the executor connects to the
broker before the run starts and, when it cannot, raises one error naming the URL -- with any
password masked, since run failures are stored in the event log and shown in the UI.

dagster-celery is optional (`pip install -e '.[cluster]'`): this module is imported lazily by
`orchestration.definitions.executor` when $COTPD_DAGSTER_EXECUTOR is `celery`.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from dagster import executor, multiple_process_executor_requirements
from dagster_celery.defaults import broker_url as DEFAULT_BROKER
from dagster_celery.executor import CELERY_CONFIG, celery_executor
from kombu import Connection
from kombu.utils.url import maybe_sanitize_url

from cotpd.errors import ConfigError

# long enough for a broker across a data-centre network, short enough that a wrong host fails the
# launch in seconds rather than in kombu's default minutes of retries
BROKER_TIMEOUT_S = 5.0


def safe_url(url: str) -> str:
    """`url` with its password replaced by ** (what may appear in logs and errors)."""
    return maybe_sanitize_url(url)


def _scrub(text: str, url: str) -> str:
    """An error text with the URL's password removed wherever a library echoed it."""
    try:
        password = urlsplit(url).password
    except ValueError:  # a URL too broken to split carries no password we could find
        password = None
    return text.replace(password, "**") if password else text


def check_broker(url: str | None, timeout: float = BROKER_TIMEOUT_S) -> None:
    """Connect to the Celery broker once; a ConfigError naming the (masked) URL if that fails."""
    url = url or DEFAULT_BROKER
    where = "execution.config.broker of the run config, e.g. orchestration/run_configs/celery.yaml"
    try:
        with Connection(url, connect_timeout=timeout) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
    except Exception as err:  # noqa: BLE001 -- kombu raises per transport (KeyError for an unknown scheme,
        # socket, DNS and auth errors): each becomes the one error below. Its text is kept (scrubbed); the
        # original is not chained, as a transport's message or traceback may hold the password.
        reason = _scrub(f"{type(err).__name__}: {err}".strip().rstrip("."), url)
        raise ConfigError(f"Celery broker {safe_url(url)} ({where}) cannot be reached within {timeout:.0f} s: "
                          f"{reason}. Check the URL, that the broker runs, and that this host can reach it.") from None


@executor(name="celery", config_schema=CELERY_CONFIG, requirements=multiple_process_executor_requirements())
def checked_celery_executor(init_context):
    """dagster-celery's executor (same config), after `check_broker` on its broker URL."""
    check_broker(init_context.executor_config.get("broker"))
    return celery_executor.executor_creation_fn(init_context)
