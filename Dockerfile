# syntax=docker/dockerfile:1
# One image for every process of the chat: web (daphne, the default command),
# worker (celery), migrate and the demo model. docker-compose.yml picks the
# command of each service.
#
# Reproducible: the base image is pinned by its full version tag, and the
# dependencies of pyproject.toml are installed at the versions pinned in
# requirements.lock (regenerate it with `bash scripts/lock.sh`).

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# --- build: a virtualenv holding only the dependencies -------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
WORKDIR /build
COPY pyproject.toml requirements.lock ./
# The [project] dependencies, not the project: its code is copied as it is below.
# Every dependency ships wheels for this platform, so no compiler is needed.
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && /opt/venv/bin/pip install --only-binary=:all: -r requirements.txt -c requirements.lock

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
