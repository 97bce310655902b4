"""Test settings: PostgreSQL and Redis when they answer (or are required), embedded stores otherwise."""

import os
import socket

from .base import *  # noqa: F403
from .base import (
    CELERY_BEAT_SCHEDULE,  # noqa: F401
    broker_transport,
)

PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def service_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


SERVICES_REQUIRED = os.environ.get("ELSA_TEST_SERVICES", "") == "required"
POSTGRES_AVAILABLE = SERVICES_REQUIRED or service_answers(PG_HOST, PG_PORT)
REDIS_AVAILABLE = SERVICES_REQUIRED or service_answers(REDIS_HOST, REDIS_PORT)

# Separate databases and Redis numbers let several test runs share one machine.
TEST_DB_NAME = os.environ.get("ELSA_TEST_DB", "elsa_test")
TEST_REDIS_DB = int(os.environ.get("ELSA_TEST_REDIS_DB", "1"))

if POSTGRES_AVAILABLE:
    DATABASES = {
        "default": {
            "ENGINE": POSTGRES_ENGINE,  # noqa: F405 - as in production
            "NAME": TEST_DB_NAME,
            "USER": "postgres",
            "HOST": PG_HOST,
            "PORT": PG_PORT,
            "CONN_MAX_AGE": 0,
            "OPTIONS": POSTGRES_OPTIONS,  # noqa: F405 - as in production
            # The test database keeps the plain name so a live worker subprocess can open it.
            "TEST": {"NAME": TEST_DB_NAME},
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / f"{TEST_DB_NAME}.sqlite3"),  # noqa: F405
            "TEST": {"NAME": str(VAR_DIR / f"{TEST_DB_NAME}.sqlite3")},  # noqa: F405
            "OPTIONS": {"timeout": 20},
        }
    }

REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/{TEST_REDIS_DB}"
if REDIS_AVAILABLE:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": f"test-{TEST_DB_NAME}",
        }
    }
    CACHE_IS_SHARED = True
    SILENCED_SYSTEM_CHECKS = []
    # The broker gets its own Redis database: a test that clears the cache must not drop queued tasks.
    CELERY_BROKER_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/{(TEST_REDIS_DB + 8) % 16}"
    CELERY_RESULT_BACKEND = CELERY_BROKER_URL
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "elsa-test"}}
    CELERY_BROKER_URL = "memory://"
    CELERY_RESULT_BACKEND = "cache+memory://"

# One queue per test run, so parallel runs and stale tasks never cross.
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("ELSA_CELERY_QUEUE", f"elsa-test-{TEST_DB_NAME}")
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 30}
CELERY_BROKER_TRANSPORT = broker_transport(CELERY_BROKER_URL)

# Fast hashing in tests; production uses Argon2.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *PASSWORD_HASHERS]  # noqa: F405
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# A live worker subprocess writes mail to files the test reads (ELSA_TEST_EMAIL_DIR).
if os.environ.get("ELSA_TEST_EMAIL_DIR"):
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = os.environ["ELSA_TEST_EMAIL_DIR"]
else:
    EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
WHITENOISE_AUTOREFRESH = True
# Test databases let Django's transactional tests TRUNCATE audit tables (audit migration 0001).
ELSA_AUDIT_TEST_DATABASE = True
