"""Settings shared by every environment, read from the environment with django-environ."""

import hashlib
from datetime import timedelta
from pathlib import Path

import environ
from corsheaders.defaults import default_headers as cors_default_headers

from elsa_site.keys import load_secret, optional_secret

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(BASE_DIR / ".env")

ELSA_ENV = env.str("ELSA_ENV", default="development")
IS_PRODUCTION = ELSA_ENV == "production"


def _secret(name: str) -> str:
    return load_secret(name, environ_value=env.str(name, default=""), production=IS_PRODUCTION, var_dir=VAR_DIR)


SECRET_KEY = _secret("ELSA_SECRET_KEY")
ELSA_SIGNING_KEY = _secret("ELSA_SIGNING_KEY")
# Newest key first: it encrypts; every listed key decrypts, so keys rotate without breaking tokens.
ELSA_ENCRYPTION_KEYS = [k.strip() for k in _secret("ELSA_ENCRYPTION_KEYS").split(",") if k.strip()]

DEBUG = env.bool("ELSA_DEBUG", default=False)

PORT = env.int("PORT", default=8000)
ALLOWED_HOSTS = env.list("ELSA_ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])
ELSA_PUBLIC_URL = env.str("ELSA_PUBLIC_URL", default=f"http://127.0.0.1:{PORT}").rstrip("/")
# How many reverse proxies in front of us append to X-Forwarded-For. 0 (the default) means the
# header is ignored entirely, so a client cannot forge its own IP for audit or rate limiting.
ELSA_TRUSTED_PROXY_COUNT = env.int("ELSA_TRUSTED_PROXY_COUNT", default=0)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "audit",
    "identity",
    "workflows",
    "workflows.executors",
    "bookmarks",
    # Last: its ready() freezes the start-up heap once every other app's ready() has run.
    "elsa_site",
]

MIDDLEWARE = [
    "elsa_site.logging.RequestIdMiddleware",
    "elsa_site.metrics.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "elsa_site.urls"
WSGI_APPLICATION = "elsa_site.wsgi.application"
AUTH_USER_MODEL = "identity.User"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Data stores -------------------------------------------------------------------------------
VAR_DIR.mkdir(parents=True, exist_ok=True)
# Django turns psycopg's prepared statements off (for transaction-mode poolers). Only the hot
# statements use them (elsa_site.db.execute_bound; Django's own queries are bound client-side and
# never prepared), each parsed and planned once per connection instead of once per run: set
# ELSA_DB_PREPARED_STATEMENTS=false behind a pooler that cannot keep them (PgBouncer in
# transaction mode before 1.21).
POSTGRES_ENGINE = "elsa_site.postgresql"
POSTGRES_OPTIONS = {"prepare_threshold": 5} if env.bool("ELSA_DB_PREPARED_STATEMENTS", default=True) else {}
DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'elsa.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL + a busy timeout let the web process, worker and beat share one SQLite file.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
else:
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # Django's backend with a health check that needs no round trip (elsa_site/postgresql).
        DATABASES["default"]["ENGINE"] = POSTGRES_ENGINE
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("ELSA_DB_CONN_MAX_AGE", default=60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
    DATABASES["default"]["OPTIONS"] = {**POSTGRES_OPTIONS, **DATABASES["default"].get("OPTIONS", {})}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {"default": env.cache_url("CACHE_URL", default="locmemcache://elsa")}
CACHE_IS_SHARED = CACHES["default"]["BACKEND"] in {
    "django_redis.cache.RedisCache",
    "django.core.cache.backends.redis.RedisCache",
}
# make run serves the API from one process on embedded defaults; set this above 1 only with a
# shared cache (the elsa_site.E004 check enforces it).
ELSA_WEB_CONCURRENCY = env.int("ELSA_WEB_CONCURRENCY", default=1)

# --- Passwords ---------------------------------------------------------------------------------
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# Request bodies over 1 MiB are refused with 413 (the resume endpoint's contract).
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

# --- Security headers (production.py turns on the HTTPS-only parts) --------------------------------
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "strict-origin-when-cross-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True
# "HTTP_X_FORWARDED_PROTO,https" when TLS ends at a reverse proxy that sets that header.
_proxy_header = env.list("ELSA_SECURE_PROXY_SSL_HEADER", default=[])
SECURE_PROXY_SSL_HEADER = tuple(_proxy_header) if len(_proxy_header) == 2 else None
CSRF_TRUSTED_ORIGINS = env.list("ELSA_CSRF_TRUSTED_ORIGINS", default=[])

# --- CORS: only the resume endpoint and the API, only configured origins ------------------------
CORS_ALLOWED_ORIGINS = env.list("ELSA_CORS_ALLOWED_ORIGINS", default=[])
CORS_ALLOW_ALL_ORIGINS = False
CORS_URLS_REGEX = r"^/elsa/api/.*$"
CORS_ALLOW_CREDENTIALS = env.bool("ELSA_CORS_ALLOW_CREDENTIALS", default=False)
CORS_PREFLIGHT_MAX_AGE = 86400
# Browsers on an allowed origin may send API keys and idempotency keys as well as the defaults.
CORS_ALLOW_HEADERS = (*cors_default_headers, "x-api-key", "idempotency-key", "x-request-id")

# --- REST framework --------------------------------------------------------------------------
REST_FRAMEWORK = {
    # The identity app lists its authentication classes here (JWT, API key, external OIDC).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "identity.authentication.JwtAuthentication",
        "identity.authentication.OidcAuthentication",
        "identity.authentication.ApiKeyAuthentication",
        "identity.authentication.PrincipalSessionAuthentication",
    ],
    # Deny by default: every view must declare HasPermission(...) or be on the anonymous allowlist.
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "elsa_site.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Elsa secure workflow server API",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SCHEMA_PATH_PREFIX": "/elsa/api/",
    # Three models have a `status` field with different choices; name each enum in the schema.
    "ENUM_NAME_OVERRIDES": {
        "WorkflowInstanceStatusEnum": "workflows.models.InstanceStatus",
        "DefinitionVersionStatusEnum": "workflows.models.WorkflowDefinitionVersion.Status",
        "ActivityExecutionStatusEnum": "workflows.models.ActivityExecution.Status",
    },
}

# --- Celery ----------------------------------------------------------------------------------
# The embedded broker keeps queued and delayed (ETA) tasks in a SQLite file across restarts.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=f"sqla+sqlite:///{VAR_DIR / 'celery-broker.sqlite3'}")
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=f"db+sqlite:///{VAR_DIR / 'celery-results.sqlite3'}")
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = env.str("ELSA_CELERY_QUEUE", default="elsa")
CELERY_RESULT_EXPIRES = 3600
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Read by Celery on every publish; set to Celery's defaults so that each read is found in these
# settings at once, rather than after four failed attribute lookups (an exception each) under the
# CELERY_ prefix and the old setting names before Celery's own defaults answer.
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_SEND_SENT_EVENT = False
CELERY_BROKER_POOL_ACQUIRE_TIMEOUT = None
# On Redis, a task not acknowledged within this time (its worker died) is delivered again. The
# embedded SQLAlchemy transport takes no such option (it would reach create_engine); there the
# workflow engine's periodic sweep re-enqueues stalled instances.
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {"visibility_timeout": env.int("ELSA_VISIBILITY_TIMEOUT", default=300)}
    if CELERY_BROKER_URL.startswith(("redis://", "rediss://"))
    else {}
)


def broker_transport(url: str) -> str | None:
    """kombu's Redis transport reusing one client per channel (elsa_site.broker) for redis:// URLs;
    otherwise None: kombu picks the transport by the URL's scheme."""
    return "elsa_site.broker:Transport" if url.startswith("redis://") else None


CELERY_BROKER_TRANSPORT = broker_transport(CELERY_BROKER_URL)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# The audit checkpoint beat's interval; audit's freshness checks read it too (see Audit below).
ELSA_AUDIT_CHECKPOINT_INTERVAL_SECONDS = env.float("ELSA_AUDIT_CHECKPOINT_INTERVAL_SECONDS", default=60.0)
CELERY_BEAT_SCHEDULE: dict = {
    # Sign the audit chain head every minute, moved or not (a cut tail or rewritten table then fails
    # verification, and so does a newest checkpoint that is too old).
    "audit-checkpoint": {"task": "audit.checkpoint", "schedule": ELSA_AUDIT_CHECKPOINT_INTERVAL_SECONDS},
    # Chain audit events whose process died between its commit and chaining them (normally
    # chained right after commit by the process that recorded them).
    "audit-seal": {"task": "audit.seal", "schedule": env.float("ELSA_AUDIT_SEAL_INTERVAL_SECONDS", default=5.0)},
    # Fire workflow timers lost in a restart and re-enqueue stalled Running instances.
    "workflows-sweep": {"task": "workflows.sweep", "schedule": env.float("ELSA_WORKFLOW_SWEEP_SECONDS", default=15.0)},
    # Mark expired bookmarks, apply their on_expiry policy, prune expired token denylist rows.
    "bookmarks-expire": {
        "task": "bookmarks.expire_due",
        "schedule": env.float("ELSA_BOOKMARK_EXPIRY_INTERVAL_SECONDS", default=60.0),
    },
    # Delete expired outstanding/blacklisted refresh-token rows (they can no longer be used anyway).
    "identity-flush-expired-tokens": {"task": "identity.flush_expired_tokens", "schedule": 3600.0},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- Logging: one JSON object per line, sensitive values redacted -------------------------------
ELSA_LOG_REDACTED_FIELDS = env.list("ELSA_LOG_REDACTED_FIELDS", default=[])
ELSA_LOG_LEVEL = env.str("ELSA_LOG_LEVEL", default="INFO")
LOGGING = {
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
    "root": {"handlers": ["stdout"], "level": ELSA_LOG_LEVEL},
    "loggers": {
        "django.server": {"level": "WARNING"},
        # Celery follows ELSA_LOG_LEVEL like everything else (its task received/succeeded lines are INFO).
        "celery": {"level": ELSA_LOG_LEVEL},
        # httpx logs full request URLs at INFO, and an executor may carry its API key in the query.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}

# --- Audit ------------------------------------------------------------------------------------
# How long chaining after commit waits for another process's chaining before leaving its events
# to the periodic sweep (audit.seal, every ELSA_AUDIT_SEAL_INTERVAL_SECONDS).
ELSA_AUDIT_SEAL_LOCK_TIMEOUT_MS = env.int("ELSA_AUDIT_SEAL_LOCK_TIMEOUT_MS", default=10_000)
# HMAC key for signed audit checkpoints; it must not live in the database it protects.
ELSA_AUDIT_CHECKPOINT_KEY = optional_secret(
    "ELSA_AUDIT_CHECKPOINT_KEY",
    environ_value=env.str("ELSA_AUDIT_CHECKPOINT_KEY", default=""),
    derived=f"audit-checkpoint:{SECRET_KEY}",
)
# Verification fails when the newest validly signed checkpoint is older than this (the beat signs at
# least once per interval): so cutting the tail back to an old checkpoint, with the checkpoints after
# it, cannot go unseen. At least twice the interval (check audit.E002).
ELSA_AUDIT_CHECKPOINT_MAX_AGE_SECONDS = env.float(
    "ELSA_AUDIT_CHECKPOINT_MAX_AGE_SECONDS", default=5 * ELSA_AUDIT_CHECKPOINT_INTERVAL_SECONDS
)

# --- Identity -------------------------------------------------------------------------------
ELSA_IDENTITY_FILE = env.str("ELSA_IDENTITY_FILE", default="")
# Server-side pepper for API key hashes (HMAC-SHA256); defaults to a value derived from the secret key.
ELSA_API_KEY_PEPPER = optional_secret(
    "ELSA_API_KEY_PEPPER",
    environ_value=env.str("ELSA_API_KEY_PEPPER", default=""),
    derived=f"api-key-pepper:{SECRET_KEY}",
)
ELSA_ACCESS_TOKEN_LIFETIME = timedelta(seconds=env.int("ELSA_ACCESS_TOKEN_LIFETIME_SECONDS", default=3600))
ELSA_REFRESH_TOKEN_LIFETIME = timedelta(seconds=env.int("ELSA_REFRESH_TOKEN_LIFETIME_SECONDS", default=7 * 86400))
ELSA_JWT_ISSUER = env.str("ELSA_JWT_ISSUER", default="elsa")
ELSA_JWT_AUDIENCE = env.str("ELSA_JWT_AUDIENCE", default="elsa-api")
# JSON list of {"issuer", "audience", "jwks_url" | "jwks_file"} for external OIDC access tokens.
ELSA_OIDC_ISSUERS = env.json("ELSA_OIDC_ISSUERS", default=[])
# JSON object mapping an external role, group or scope to a list of permission strings.
ELSA_OIDC_PERMISSION_MAP = env.json("ELSA_OIDC_PERMISSION_MAP", default={})
ELSA_LOGIN_RATE = env.str("ELSA_LOGIN_RATE", default="10/m")
# Failed API key attempts per client IP; beyond it, keys this process has not verified are 429
# without a query, and the block is audited once (identity.E006 checks the rate's grammar).
ELSA_API_KEY_FAILURE_RATE = env.str("ELSA_API_KEY_FAILURE_RATE", default="10/m")
# Process-local verification cache of API keys and token principals: entries live this long while
# invalidations arrive by push (Redis pub/sub), and at most the fallback time while they cannot.
ELSA_IDENTITY_CACHE_SECONDS = env.float("ELSA_IDENTITY_CACHE_SECONDS", default=300.0)
ELSA_IDENTITY_CACHE_FALLBACK_SECONDS = env.float("ELSA_IDENTITY_CACHE_FALLBACK_SECONDS", default=1.0)
# Redis for identity invalidations; defaults to CACHE_URL when that is Redis.
ELSA_IDENTITY_REDIS_URL = env.str("ELSA_IDENTITY_REDIS_URL", default="")
ELSA_OIDC_JWKS_CACHE_SECONDS = env.int("ELSA_OIDC_JWKS_CACHE_SECONDS", default=3600)
# An unknown `kid` triggers at most one JWKS refetch per issuer in this many seconds.
ELSA_OIDC_JWKS_REFETCH_SECONDS = env.float("ELSA_OIDC_JWKS_REFETCH_SECONDS", default=30.0)
ELSA_OIDC_LEEWAY_SECONDS = env.int("ELSA_OIDC_LEEWAY_SECONDS", default=30)
# While an issuer's JWKS cannot be refreshed, its last good keys verify tokens for at most this long
# past their cache lifetime; then its tokens are 401 until a fetch succeeds (identity.E005: 0..7 days).
ELSA_OIDC_JWKS_MAX_STALE_SECONDS = env.int("ELSA_OIDC_JWKS_MAX_STALE_SECONDS", default=86400)

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": ELSA_ACCESS_TOKEN_LIFETIME,
    "REFRESH_TOKEN_LIFETIME": ELSA_REFRESH_TOKEN_LIFETIME,
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "ALGORITHM": "HS256",
    # The JWT signing key is its own secret, never Django's SECRET_KEY.
    "SIGNING_KEY": ELSA_SIGNING_KEY,
    "AUDIENCE": ELSA_JWT_AUDIENCE,
    "ISSUER": ELSA_JWT_ISSUER,
    "USER_ID_FIELD": "id",
    "USER_ID_CLAIM": "sub",
    "AUTH_HEADER_TYPES": ("Bearer",),
}

# --- Workflows ------------------------------------------------------------------------------
ELSA_WORKFLOW_MAX_STEPS = env.int("ELSA_WORKFLOW_MAX_STEPS", default=1000)
ELSA_DEFINITION_MAX_BYTES = env.int("ELSA_DEFINITION_MAX_BYTES", default=256 * 1024)
# Bounded CEL cost: source length and number of comprehension macros (map/filter/all/exists).
ELSA_EXPRESSION_MAX_LENGTH = env.int("ELSA_EXPRESSION_MAX_LENGTH", default=2000)
ELSA_EXPRESSION_MAX_COMPREHENSIONS = env.int("ELSA_EXPRESSION_MAX_COMPREHENSIONS", default=2)
# A Running instance not updated for this long is re-enqueued by the stalled-instance sweep.
ELSA_WORKFLOW_STALL_SECONDS = env.int("ELSA_WORKFLOW_STALL_SECONDS", default=120)
# Queue for the engine's run and timer tasks; empty means CELERY_TASK_DEFAULT_QUEUE.
ELSA_WORKFLOW_QUEUE = env.str("ELSA_WORKFLOW_QUEUE", default="")
# Time limits of one run or timer task (seconds). A run hands over to a fresh task after half the
# soft limit; the soft limit faults the instance, the hard one (for a step that cannot be
# interrupted, such as a long CEL evaluation) kills the pool process and faults it from the parent.
ELSA_WORKFLOW_RUN_SOFT_TIME_LIMIT = env.float("ELSA_WORKFLOW_RUN_SOFT_TIME_LIMIT", default=300.0)
ELSA_WORKFLOW_RUN_TIME_LIMIT = env.float("ELSA_WORKFLOW_RUN_TIME_LIMIT", default=330.0)
# Longest accepted Delay (seconds); longer timers are refused at run time with a fault.
ELSA_WORKFLOW_MAX_DELAY_SECONDS = env.int("ELSA_WORKFLOW_MAX_DELAY_SECONDS", default=366 * 86400)
# Development mail goes to files under var/mail/, not the console: approval mails carry resume
# tokens, and the console backend would print them into the process log.
EMAIL_BACKEND = env.str("ELSA_EMAIL_BACKEND", default="django.core.mail.backends.filebased.EmailBackend")
EMAIL_FILE_PATH = env.str("ELSA_EMAIL_FILE_PATH", default=str(VAR_DIR / "mail"))
EMAIL_USE_TLS = env.bool("ELSA_EMAIL_USE_TLS", default=False)
EMAIL_HOST_USER = env.str("ELSA_EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("ELSA_EMAIL_HOST_PASSWORD", default="")
EMAIL_HOST = env.str("ELSA_EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("ELSA_EMAIL_PORT", default=25)
DEFAULT_FROM_EMAIL = env.str("ELSA_DEFAULT_FROM_EMAIL", default="elsa@localhost")

# --- Executors ------------------------------------------------------------------------------
ELSA_EXECUTOR_HTTP_ALLOWLIST = env.list("ELSA_EXECUTOR_HTTP_ALLOWLIST", default=[])
ELSA_EXECUTOR_RETRY_JITTER = env.float("ELSA_EXECUTOR_RETRY_JITTER", default=0.1)
ELSA_BREAKER_FAIL_MAX = env.int("ELSA_BREAKER_FAIL_MAX", default=5)
ELSA_BREAKER_RESET_SECONDS = env.int("ELSA_BREAKER_RESET_SECONDS", default=30)
ELSA_BREAKER_HALF_OPEN_PROBES = env.int("ELSA_BREAKER_HALF_OPEN_PROBES", default=1)
# Backoff unit: retries wait base * 1, 2, 4, 8 s (+/- jitter); 5 attempts in all.
ELSA_EXECUTOR_RETRY_BASE_SECONDS = env.float("ELSA_EXECUTOR_RETRY_BASE_SECONDS", default=1.0)
ELSA_EXECUTOR_MAX_ATTEMPTS = env.int("ELSA_EXECUTOR_MAX_ATTEMPTS", default=5)
# A Retry-After longer than this is capped (a partner cannot park an instance for days).
ELSA_EXECUTOR_RETRY_AFTER_MAX_SECONDS = env.float("ELSA_EXECUTOR_RETRY_AFTER_MAX_SECONDS", default=300.0)
ELSA_EXECUTOR_RESPONSE_MAX_BYTES = env.int("ELSA_EXECUTOR_RESPONSE_MAX_BYTES", default=1024 * 1024)
# OIDC access tokens are refreshed this long before they expire.
ELSA_EXECUTOR_TOKEN_REFRESH_MARGIN_SECONDS = env.int("ELSA_EXECUTOR_TOKEN_REFRESH_MARGIN_SECONDS", default=30)

# --- Bookmarks ------------------------------------------------------------------------------
ELSA_BOOKMARK_DEFAULT_TTL_SECONDS = env.int("ELSA_BOOKMARK_DEFAULT_TTL_SECONDS", default=86400)
ELSA_RESUME_RATE = env.str("ELSA_RESUME_RATE", default="100/m")
ELSA_RESUME_MAX_FAILURES = env.int("ELSA_RESUME_MAX_FAILURES", default=3)
ELSA_RESUME_ALLOW_GET = env.bool("ELSA_RESUME_ALLOW_GET", default=True)
# Upper bound for any bookmark or minted token lifetime (30 days by default).
ELSA_BOOKMARK_MAX_TTL_SECONDS = env.int("ELSA_BOOKMARK_MAX_TTL_SECONDS", default=30 * 86400)

RATELIMIT_USE_CACHE = "default"
# Read by django-ratelimit and the resume limiter on every resume; set to their defaults so that
# each read finds the attribute (an unset one is a failed lookup with an exception, every time).
RATELIMIT_ENABLE = True
RATELIMIT_CACHE_PREFIX = "rl:"
RATELIMIT_HASH_ALGORITHM = hashlib.sha256
# Read by django-redis when a request that used the cache finishes (its default, written out).
DJANGO_REDIS_CLOSE_CONNECTION = False
RATELIMIT_VIEW = "elsa_site.errors.ratelimited_view"
RATELIMIT_EXCEPTION_CLASS = "django_ratelimit.exceptions.Ratelimited"
# django-ratelimit refuses local-memory caches (E003/W001); on embedded defaults make run serves
# the API from a single process, so the local cache is correct there and the checks are silenced.
SILENCED_SYSTEM_CHECKS = [] if CACHE_IS_SHARED else ["django_ratelimit.E003", "django_ratelimit.W001"]
