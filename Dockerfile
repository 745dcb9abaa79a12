# syntax=docker/dockerfile:1
# One image for every process of the chat: web (daphne, the default command),
# worker (celery), beat, migrate and the demo model. docker-compose.yml picks
# the command of each service.
#
# Reproducible: the base image is pinned by its full version tag, and the
# dependencies are installed from uv.lock, the one lock the tests and the run
# script install too (regenerate it with `bash scripts/lock.sh`): the same
# versions, checked against the same hashes; the image takes only the app's
# part of it (no dev or bench extras).

ARG PYTHON_IMAGE=python:3.11.16-slim-bookworm

# --- build: a virtualenv holding only the dependencies -------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy
WORKDIR /build
COPY pyproject.toml uv.lock scripts/uv_requirement.py ./
# uv first, at the version and hashes uv.lock pins for it (pip checks them); it
# stays in this stage. Then the [project] dependencies, not the project: its code
# is copied as it is below. --no-build: wheels only, so no compiler is needed.
RUN python uv_requirement.py uv.lock > uv-requirement.txt \
 && pip install --no-deps --require-hashes -r uv-requirement.txt \
 && uv sync --locked --no-install-project --no-build --python /usr/local/bin/python

# --- runtime: the virtualenv and the code, run as an unprivileged user -----------
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=chatsite.settings
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /app --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# What is copied is decided by .dockerignore (no tests, no .env, no .git).
COPY . .
# Static files are collected (hashed and compressed) into the image, owned by
# root and read-only for the app; WhiteNoise serves them. With DEBUG off the
# settings need a long secret key to load: this one serves for nothing else.
RUN DJANGO_DEBUG=false DJANGO_SECRET_KEY=collectstatic-at-image-build-only-never-a-real-secret \
    python manage.py collectstatic --noinput --verbosity 0
USER app:app
EXPOSE 8000
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "--proxy-headers", "chatsite.asgi:application"]
