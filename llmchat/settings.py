"""
llmchat settings: one file, every value from the environment.

Each value has a safe development default. With DEBUG=False (the default, so a
forgotten variable fails closed) the app is in production mode: it refuses to
start without a real SECRET_KEY and ALLOWED_HOSTS, and turns on the security
settings that `manage.py check --deploy` asks for.

Every variable is listed, with its default, in README.md ("Configuration").
"""

import os
from decimal import Decimal, InvalidOperation
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A local .env file is optional; real environment variables win over it.
# ENV_FILE names another file; ENV_FILE= (empty) reads none (the tests do that).
ENV_FILE = env.str("ENV_FILE", default=str(BASE_DIR / ".env"))
if ENV_FILE:
    env.read_env(ENV_FILE, overwrite=False)

DEBUG = env.bool("DEBUG", default=False)

# --- Secrets and hosts --------------------------------------------------------

# Used only with DEBUG=True; production refuses to start with it.
DEV_SECRET_KEY = "dev-insecure-0nly-for-local-development-never-in-production-xyz"  # noqa: S105

SECRET_KEY = env.str("SECRET_KEY", default="")
# Old keys, kept so that sessions, password-reset links and encrypted provider
# keys made with them stay readable until `manage.py rotate_keys` has run.
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS", default=[])
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])


def _weak_secret(value: str) -> bool:
    # The same bar as Django's own security.W009 check.
    return value == DEV_SECRET_KEY or len(value) < 50 or len(set(value)) < 5


if DEBUG:
    SECRET_KEY = SECRET_KEY or DEV_SECRET_KEY
    ALLOWED_HOSTS = ALLOWED_HOSTS or ["localhost", "127.0.0.1", "[::1]"]
else:
    if not SECRET_KEY or _weak_secret(SECRET_KEY):
        raise ImproperlyConfigured(
            "SECRET_KEY is missing, shorter than 50 characters or the development "
            "default. With DEBUG=False llmchat needs a long random SECRET_KEY, e.g. "
            'python -c "import secrets; print(secrets.token_urlsafe(50))"'
        )
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured(
            "ALLOWED_HOSTS is empty. With DEBUG=False set it to the host names "
            "this site is served under, comma-separated, e.g. "
            "ALLOWED_HOSTS=chat.example.com"
        )

# Salt for deriving the Fernet keys that encrypt provider API keys at rest
# (django-fernet-encrypted-fields). Not a secret; changing it makes stored keys
# unreadable.
SALT_KEY = env.list("SALT_KEY", default=["llmchat-provider-keys"])

# --- Applications ---------------------------------------------------------------

INSTALLED_APPS = [
    "django.contrib.admin",
    # Before django.contrib.auth: of two apps' commands of one name, the first
    # app's runs, and accounts' createsuperuser marks the address verified.
    "accounts",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.google",
    "llmchat",
    "providers",
    "pricing",
    "conversations",
]

MIDDLEWARE = [
    "llmchat.middleware.RequestLogMiddleware",
    "llmchat.middleware.ApiErrorMiddleware",
    "llmchat.middleware.HealthCheckMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "llmchat.urls"
ASGI_APPLICATION = "llmchat.asgi.application"
WSGI_APPLICATION = "llmchat.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.csp",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "llmchat.context_processors.site",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------

DATABASES = {
    "default": env.db_url_config(env.str("DATABASE_URL", default="") or "sqlite:///var/db.sqlite3")
}
_db = DATABASES["default"]

if _db["ENGINE"] == "django.db.backends.sqlite3":
    if _db["NAME"] != ":memory:":
        _path = Path(_db["NAME"])
        if not _path.is_absolute():
            _path = BASE_DIR / _path
        _path.parent.mkdir(parents=True, exist_ok=True)
        _db["NAME"] = str(_path)
    # Tests use a file too (not the in-memory default): in-memory databases lock
    # whole tables, so the streaming tests' concurrent requests would fail there.
    # One file per test run, so that two runs at once don't share it.
    (BASE_DIR / "var").mkdir(exist_ok=True)
    _db["TEST"] = {"NAME": str(BASE_DIR / "var" / f"test-db-{os.getpid()}.sqlite3")}
    # WAL lets readers run beside the writer, IMMEDIATE takes the write lock at
    # BEGIN so two writers queue for `timeout` seconds instead of failing with
    # "database is locked" halfway through a transaction.
    _db["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
elif _db["ENGINE"] == "django.db.backends.postgresql" and env.bool("DATABASE_POOL", default=True):
    # Under ASGI, Django runs ORM calls in worker threads and closes the
    # connection at the end of every request, so CONN_MAX_AGE persistence does
    # not help (and leaks connections per thread). psycopg's pool keeps a bounded
    # set of open connections per process instead. Turn it off (DATABASE_POOL=
    # false) behind an external pooler such as PgBouncer.
    from llmchat.dbpool import check_connection

    _db["CONN_MAX_AGE"] = 0
    _db.setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DATABASE_POOL_MIN_SIZE", default=2),
        "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=20),
        "timeout": env.float("DATABASE_POOL_TIMEOUT", default=10.0),
        # A round trip only for a suspect connection (llmchat/dbpool.py).
        "check": check_connection,
    }
_db["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache ----------------------------------------------------------------------

REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    # Sessions read from the shared cache, written through to the database: one
    # query less on every signed-in request (docs/performance.md). Only with a
    # cache every process shares: with local memory, a sign-out in one process
    # would not reach the others.
    SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "llmchat",
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "llmchat",
        }
    }

# --- Auth and accounts (django-allauth) -------------------------------------------

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "conversations:chat"
ACCOUNT_LOGOUT_REDIRECT_URL = "account_login"

ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_EMAIL_VERIFICATION = env.str(
    "ACCOUNT_EMAIL_VERIFICATION", default="optional" if DEBUG else "mandatory"
)
if ACCOUNT_EMAIL_VERIFICATION not in {"mandatory", "optional", "none"}:
    raise ImproperlyConfigured(
        "ACCOUNT_EMAIL_VERIFICATION must be one of mandatory, optional, none; "
        f"got {ACCOUNT_EMAIL_VERIFICATION!r}"
    )
ACCOUNT_LOGOUT_ON_GET = False
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_PREVENT_ENUMERATION = True
ACCOUNT_SESSION_REMEMBER = None
# allauth's rate limits stay at their defaults (login failures, signups,
# password resets, ...). They are counted in the cache, so with REDIS_URL they
# hold across processes.
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "http" if DEBUG else "https"
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[llmchat] "

SOCIALACCOUNT_LOGIN_ON_GET = False
SOCIALACCOUNT_AUTO_SIGNUP = True
SOCIALACCOUNT_EMAIL_REQUIRED = True
SOCIALACCOUNT_STORE_TOKENS = False
# A Google login whose email belongs to an existing account signs in to that
# account only when this is on *and* Google says the address is verified;
# otherwise the person is told the address is taken. Off by default.
SOCIALACCOUNT_EMAIL_AUTHENTICATION = env.bool("SOCIALACCOUNT_EMAIL_AUTHENTICATION", default=False)
SOCIALACCOUNT_EMAIL_AUTHENTICATION_AUTO_CONNECT = SOCIALACCOUNT_EMAIL_AUTHENTICATION

GOOGLE_CLIENT_ID = env.str("GOOGLE_CLIENT_ID", default="")
GOOGLE_CLIENT_SECRET = env.str("GOOGLE_CLIENT_SECRET", default="")
SOCIALACCOUNT_PROVIDERS: dict[str, dict] = {
    "google": {
        "SCOPE": ["openid", "profile", "email"],
        "AUTH_PARAMS": {"access_type": "online", "prompt": "select_account"},
        "OAUTH_PKCE_ENABLED": True,
    }
}
if GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET:
    # Configured here, so no SocialApp row is needed in the database.
    SOCIALACCOUNT_PROVIDERS["google"]["APPS"] = [
        {"client_id": GOOGLE_CLIENT_ID, "secret": GOOGLE_CLIENT_SECRET, "key": ""}
    ]

# --- Email ----------------------------------------------------------------------

# Console by default; EMAIL_URL=smtp+tls://user:password@host:587 for SMTP.
# Django 6.1's MAILERS replaces the EMAIL_* settings.
# An empty value, as in .env.example, means the default.
_email = env.email_url_config(env.str("EMAIL_URL", default="") or "consolemail://")
_mailer: dict = {"BACKEND": _email["EMAIL_BACKEND"]}
if _email["EMAIL_BACKEND"].endswith("smtp.EmailBackend"):
    _mailer["OPTIONS"] = {
        "host": _email["EMAIL_HOST"],
        "port": _email["EMAIL_PORT"] or 25,
        "username": _email["EMAIL_HOST_USER"],
        "password": _email["EMAIL_HOST_PASSWORD"],
        "use_tls": _email.get("EMAIL_USE_TLS", False),
        "use_ssl": _email.get("EMAIL_USE_SSL", False),
        "timeout": 10,
    }
MAILERS = {"default": _mailer}
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="llmchat <noreply@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Internationalization -----------------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

# --- Static files ---------------------------------------------------------------

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# In development (and tests) whitenoise serves straight from the app folders;
# in production from STATIC_ROOT, filled by collectstatic at image build.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

# --- Security -------------------------------------------------------------------

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# Content Security Policy, Django's own (django.middleware.csp). On in
# development too, so that a page that breaks it is seen before production.
# Inline <script> needs {{ csp_nonce }}; inline style attributes are refused.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "font-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "frame-ancestors": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "form-action": [CSP.SELF, "https://accounts.google.com"],
}

SILENCED_SYSTEM_CHECKS: list[str] = []
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # The ledger's covering index (INCLUDE cost, key_source) is a PostgreSQL
    # speed-up; on SQLite it is a plain index, which is all it needs to be.
    SILENCED_SYSTEM_CHECKS.append("models.W040")
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto.
if env.bool("USE_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

if not DEBUG:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    # Off when the proxy in front already redirects http to https.
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_REDIRECT_EXEMPT = [r"^health$"]
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
    if not SECURE_HSTS_PRELOAD:
        # Preloading is an operator's deliberate, hard-to-undo choice (browsers'
        # built-in lists); not asking for it is not a misconfiguration.
        SILENCED_SYSTEM_CHECKS.append("security.W021")
    if not SECURE_SSL_REDIRECT:
        # The operator said TLS is enforced in front of us.
        SILENCED_SYSTEM_CHECKS.append("security.W008")

# --- Logging --------------------------------------------------------------------

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
LOG_FORMAT = env.str("LOG_FORMAT", default="text" if DEBUG else "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "llmchat.logging.RequestIdFilter"}},
    "formatters": {
        "json": {"()": "llmchat.logging.JsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "filters": ["request_id"],
            "formatter": LOG_FORMAT,
        }
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        # One line per request comes from llmchat.request; these would repeat it.
        "django.request": {"level": "ERROR"},
        "django.server": {"level": "WARNING"},
        "uvicorn.access": {"level": "WARNING"},
        # HTTP client and SDK debug lines can include request details; never
        # let them into the logs.
        "httpx2": {"level": "WARNING"},
        "httpcore2": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        "openai": {"level": "WARNING"},
        "anthropic": {"level": "WARNING"},
        "google_genai": {"level": "WARNING"},
    },
}

# --- Providers ----------------------------------------------------------------
# Base URLs are the operator's (trusted: they may point at a gateway on a private
# network). Server keys are fallbacks for users without a key of their own.

OPENAI_BASE_URL = env.str("OPENAI_BASE_URL", default="https://api.openai.com/v1")
ANTHROPIC_BASE_URL = env.str("ANTHROPIC_BASE_URL", default="https://api.anthropic.com")
GEMINI_BASE_URL = env.str("GEMINI_BASE_URL", default="https://generativelanguage.googleapis.com")
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
ANTHROPIC_API_KEY = env.str("ANTHROPIC_API_KEY", default="")
GEMINI_API_KEY = env.str("GEMINI_API_KEY", default="")
# The operator's own OpenAI-compatible server (vLLM, Ollama, a gateway), if any.
COMPATIBLE_BASE_URL = env.str("COMPATIBLE_BASE_URL", default="")
COMPATIBLE_API_KEY = env.str("COMPATIBLE_API_KEY", default="")
ALLOW_SERVER_KEYS = env.bool("ALLOW_SERVER_KEYS", default=True)
# Private-network servers users may use as a compatible base URL (a LAN Ollama):
# full URLs, scheme://host:port, comma-separated.
ALLOWED_PRIVATE_BASE_URLS = env.list("ALLOWED_PRIVATE_BASE_URLS", default=[])
DEMO_PROVIDER = env.bool("DEMO_PROVIDER", default=True)
DEMO_TOKEN_DELAY = env.float("DEMO_TOKEN_DELAY", default=0.03)

PROVIDER_CONNECT_TIMEOUT = env.float("PROVIDER_CONNECT_TIMEOUT", default=5.0)
PROVIDER_FIRST_TOKEN_TIMEOUT = env.float("PROVIDER_FIRST_TOKEN_TIMEOUT", default=120.0)
PROVIDER_IDLE_TIMEOUT = env.float("PROVIDER_IDLE_TIMEOUT", default=60.0)
PROVIDER_MAX_RETRIES = env.int("PROVIDER_MAX_RETRIES", default=2)
PROVIDER_RETRY_BACKOFF = env.float("PROVIDER_RETRY_BACKOFF", default=0.5)
# A Retry-After longer than this is reported to the user instead of waited out.
PROVIDER_MAX_RETRY_WAIT = env.float("PROVIDER_MAX_RETRY_WAIT", default=10.0)
DEFAULT_MAX_OUTPUT_TOKENS = env.int("DEFAULT_MAX_OUTPUT_TOKENS", default=4096)

# --- Chat -------------------------------------------------------------------
# A reply still "generating" after this long is taken for dead (its process
# crashed) and closed by the sweeper; it is also how long a conversation stays
# locked against a second send while a reply streams.
CHAT_STREAM_MAX_SECONDS = env.int("CHAT_STREAM_MAX_SECONDS", default=600)
CHAT_MAX_MESSAGE_CHARS = env.int("CHAT_MAX_MESSAGE_CHARS", default=100_000)
CHAT_MAX_SYSTEM_PROMPT_CHARS = env.int("CHAT_MAX_SYSTEM_PROMPT_CHARS", default=20_000)
# Seconds between keep-alive comments on a quiet stream (proxies close idle ones).
CHAT_HEARTBEAT_SECONDS = env.float("CHAT_HEARTBEAT_SECONDS", default=15.0)
# Text that arrives within this many seconds of the last delta sent is sent with
# the next one (0: one event per provider chunk). The first delta goes at once.
CHAT_STREAM_FLUSH_SECONDS = env.float("CHAT_STREAM_FLUSH_SECONDS", default=0.05)
# At most this many delta events a second per worker process, over all the
# replies it relays: with more replies streaming at once than this times
# CHAT_STREAM_FLUSH_SECONDS, each reply's interval grows to its share (fewer,
# larger events rather than falling behind). 0: no limit.
CHAT_STREAM_EVENTS_PER_SECOND = env.int("CHAT_STREAM_EVENTS_PER_SECOND", default=1000)

# --- Budgets and limits ----------------------------------------------------------
# Monthly spend limits in USD (empty: unlimited). Per user; a user's own limit in
# the admin overrides the default. The server-key limit caps what each user may
# spend of the operator's keys.
DEFAULT_MONTHLY_BUDGET = env.str("DEFAULT_MONTHLY_BUDGET", default="")
SERVER_KEY_MONTHLY_BUDGET = env.str("SERVER_KEY_MONTHLY_BUDGET", default="")


def _fallback_prices(raw: str) -> dict[str, tuple[Decimal, Decimal]]:
    prices = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        provider, _, rates = item.partition("=")
        provider = provider.strip()
        try:
            given = [Decimal(rate.strip()) for rate in rates.split("/")]
        except InvalidOperation:
            given = []
        if provider not in _PROVIDERS or len(given) != 2 or not all(map(_a_price, given)):
            raise ImproperlyConfigured(
                f"FALLBACK_PRICES: {item!r} is not provider=INPUT/OUTPUT (USD per million "
                f"tokens, e.g. openai=10/40, under 1000000 with at most six decimals) for a "
                f"provider of {', '.join(_PROVIDERS)}"
            )
        prices[provider] = (given[0], given[1])
    return prices


def _a_price(value: Decimal) -> bool:
    """What a price in the price table may be (pricing.ModelPrice's columns)."""
    exponent = value.as_tuple().exponent  # not an int for NaN and infinities
    return isinstance(exponent, int) and exponent >= -6 and 0 <= value < 1_000_000


_PROVIDERS = ("openai", "anthropic", "google", "compatible")


# What a model without a price of its own costs, per provider, in USD per million
# input/output tokens: "openai=10/40,compatible=0/0" (empty: none). Calls on the
# server's keys or under a budget need a price; a provider's fallback row in the
# admin (Model prices, model "*") wins over this.
FALLBACK_PRICES = _fallback_prices(env.str("FALLBACK_PRICES", default=""))
# Chat requests per user: "N/s", "N/m", "N/h" (empty: no limit), and streams at once.
CHAT_RATE_LIMIT = env.str("CHAT_RATE_LIMIT", default="30/m")
CHAT_MAX_CONCURRENT_STREAMS = env.int("CHAT_MAX_CONCURRENT_STREAMS", default=3)

# --- Operators ------------------------------------------------------------------
# Staff may read conversation contents in the admin (metadata only otherwise).
ADMIN_CAN_READ_CHATS = env.bool("ADMIN_CAN_READ_CHATS", default=False)
# /metrics: a bearer token, and/or client IPs allowed without one.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=[])

# --- Site -----------------------------------------------------------------------

SITE_NAME = env.str("SITE_NAME", default="llmchat")
CSRF_FAILURE_VIEW = "llmchat.api.csrf_failure"
DEFAULT_EXCEPTION_REPORTER_FILTER = "llmchat.debug.ExceptionReporterFilter"
