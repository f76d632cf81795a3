# `make run` and `make test` work from a fresh clone: each installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MYSQL_URL ?= mysql+pymysql://root:@127.0.0.1:3306
MYSQL_TEST_DB ?= tasks_test
POSTGRES_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432
POSTGRES_TEST_DB ?= tasks_test

.PHONY: install run worker celery-worker migrate test test-mysql test-postgres bench clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,celery,postgres]'
	touch $(STAMP)

migrate: install
	$(BIN)/alembic upgrade head

run: migrate
	$(BIN)/gunicorn -c service/gunicorn_conf.py

worker: migrate
	$(BIN)/python -m service.worker

# Celery's worker for TASK_EXECUTOR=celery (the test extra brings Celery too).
CELERY_POOL ?= threads
CELERY_CONCURRENCY ?= 4
celery-worker: migrate
	$(BIN)/celery -A service.runner.celery worker -P $(CELERY_POOL) -c $(CELERY_CONCURRENCY) \
	  --without-gossip --without-mingle --loglevel INFO

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The same suite against the local MariaDB, in a scratch database made afresh.
test-mysql: install
	$(BIN)/python -c "import pymysql; c = pymysql.connect(host='127.0.0.1', user='root', password=''); \
	  c.cursor().execute('DROP DATABASE IF EXISTS $(MYSQL_TEST_DB)'); \
	  c.cursor().execute('CREATE DATABASE $(MYSQL_TEST_DB) CHARACTER SET utf8mb4')"
	TEST_DATABASE_URL=$(MYSQL_URL)/$(MYSQL_TEST_DB) $(BIN)/python -m pytest $(PYTEST_ARGS)

# The same suite against the local PostgreSQL, in a scratch database made afresh.
test-postgres: install
	$(BIN)/python -c "import psycopg; c = psycopg.connect('host=127.0.0.1 user=postgres dbname=postgres', autocommit=True); \
	  c.execute('DROP DATABASE IF EXISTS $(POSTGRES_TEST_DB) WITH (FORCE)'); \
	  c.execute('CREATE DATABASE $(POSTGRES_TEST_DB)')"
	TEST_DATABASE_URL=$(POSTGRES_URL)/$(POSTGRES_TEST_DB) $(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache *.egg-info

# Benchmarks against a real gunicorn server: make bench (SQLite), make bench DB=mysql or DB=postgres.
DB ?= sqlite
# make bench EXECUTOR=celery races the Celery executor against plain Celery instead.
EXECUTOR ?= threads
bench: install
	$(BIN)/python -m tests.bench.run --db $(DB) --executor $(EXECUTOR) $(BENCH_ARGS)
