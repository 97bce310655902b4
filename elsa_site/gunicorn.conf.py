"""gunicorn settings: bind, worker model, JSON logs with tokens stripped from the access log."""

import os

bind = os.environ.get("ELSA_BIND", f"127.0.0.1:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("ELSA_WEB_CONCURRENCY", "1"))
worker_class = "gthread"
threads = int(os.environ.get("ELSA_WEB_THREADS", "8"))
timeout = 60
graceful_timeout = 20
forwarded_allow_ips = os.environ.get("ELSA_FORWARDED_ALLOW_IPS", "127.0.0.1")
accesslog = "-"
# The request line is logged without its query string: resume tokens travel there.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'
# Only the atoms the format names reach the log record, scrubbed (elsa_site/access_log.py).
logger_class = "elsa_site.access_log.AccessLogger"
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "elsa_site.logging.RedactingFilter"}},
    "formatters": {"json": {"()": "elsa_site.logging.JsonFormatter"}},
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "filters": ["redact"],
            "stream": "ext://sys.stdout",
        }
    },
    "root": {"handlers": ["stdout"], "level": "INFO"},
    "loggers": {
        "gunicorn.error": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
    },
}
