# One image for all four refit services; the command picks the service:
#
#   docker run … refit python -m services.ingest      (or trainer, monitor, inference)
#
# Configured only through REFIT_<SERVICE>_* environment variables (libs/refit/settings.py);
# docker-compose.yml beside this file runs the whole system on Apache Kafka.

# --- build: the project wheel (refit + services) from pyproject.toml --------------------------
FROM python:3.11-slim-bookworm AS build

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
COPY pyproject.toml README.md ./
COPY libs/ libs/
COPY services/ services/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# --- runtime ----------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /app

# Dependencies in their own layer, exactly the pins of pyproject.toml (all have manylinux
# wheels: no compiler needed), so a code change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['mlflow']))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The project itself (packages refit and services), then a consistency check of the whole set.
COPY --from=build /dist/ /tmp/dist/
RUN pip install --no-cache-dir --no-deps /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && pip check

COPY config/ config/

# Non-root. State and artifact directories exist (owned by the service user) so that named
# volumes mounted there start with the right ownership.
RUN groupadd --system --gid 10001 refit \
    && useradd --system --uid 10001 --gid refit --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin refit \
    && mkdir -p /var/lib/refit/state /var/lib/refit/artifacts \
    && chown -R refit:refit /var/lib/refit

USER 10001:10001

# ingest, trainer, monitor, inference (each service's REFIT_<SERVICE>_PORT default)
EXPOSE 8001 8002 8003 8004

# No default service: the command chooses one. Without one, show the CLI's help.
CMD ["refit", "--help"]
