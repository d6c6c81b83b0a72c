# The two set-up commands of the README: `make demo` and `make test`.
# Each creates its own virtualenv(s) and installs what it needs.

PYTHON ?= python3
DEMO_VENV := .venv
TEST_VENV := .venv-test
SDK1_VENV := .venv-sdk1
SAM_VENV  := .venv-sam
PIP_FLAGS := --disable-pip-version-check -q
# A hard ceiling per suite, so a hang fails CI in minutes instead of eating its whole budget.
# (pytest-timeout only covers the tests themselves, not interpreter shutdown.)
SUITE_TIMEOUT := timeout --kill-after=30 900

.PHONY: demo test lint test-sdk3 test-sdk1 validate-template bench bench-peer prereqs clean

demo: $(DEMO_VENV)/.installed
	$(DEMO_VENV)/bin/durable-semaphore demo $(DEMO_ARGS)

$(DEMO_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(DEMO_VENV)/bin/pip install $(PIP_FLAGS) -e '.[demo]'
	touch $@

test: prereqs lint test-sdk3 test-sdk1 validate-template

prereqs:
	bash infra/bootstrap.sh

$(TEST_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(TEST_VENV)
	$(TEST_VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(TEST_VENV)/bin/pip install $(PIP_FLAGS) -e '.[dev]'
	touch $@

# SDK 1.x limits threads, not operations: the integration must fix that, so test it there too.
$(SDK1_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(SDK1_VENV)
	$(SDK1_VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(SDK1_VENV)/bin/pip install $(PIP_FLAGS) -e . \
		'aws-durable-execution-sdk-python==1.7.0' \
		'aws-durable-execution-sdk-python-testing==1.2.1' \
		pytest pytest-timeout hypothesis
	touch $@

# aws-sam-cli pins boto3, so it lives in a venv of its own.
$(SAM_VENV)/.installed:
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install $(PIP_FLAGS) aws-sam-cli
	touch $@

lint: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/ruff check src tests bench infra
	$(TEST_VENV)/bin/mypy --strict src

test-sdk3: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/python infra/dynamodb_local.py install
	$(SUITE_TIMEOUT) $(TEST_VENV)/bin/python -m pytest tests --ignore=tests/sdk1 $(PYTEST_ARGS)

test-sdk1: $(SDK1_VENV)/.installed
	$(SDK1_VENV)/bin/python infra/dynamodb_local.py install
	$(SUITE_TIMEOUT) $(SDK1_VENV)/bin/python -m pytest tests/sdk1 $(PYTEST_ARGS)

validate-template: $(TEST_VENV)/.installed $(SAM_VENV)/.installed
	@if [ -f template.yaml ]; then \
		$(TEST_VENV)/bin/cfn-lint template.yaml && \
		AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null SAM_CLI_TELEMETRY=0 \
		$(SAM_VENV)/bin/sam validate --lint -t template.yaml --region us-east-1; \
	else echo "no template.yaml yet"; fi

bench: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/python infra/dynamodb_local.py install
	$(TEST_VENV)/bin/python bench/store_bench.py $(BENCH_ARGS)

# Side by side with dynamo-dlm (a bench-only dependency, the `bench` extra) on one DynamoDB Local.
bench-peer: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/pip install $(PIP_FLAGS) -e '.[bench]'
	$(TEST_VENV)/bin/python infra/dynamodb_local.py install
	$(TEST_VENV)/bin/python bench/peer_bench.py $(BENCH_ARGS)

clean:
	rm -rf $(DEMO_VENV) $(TEST_VENV) $(SDK1_VENV) $(SAM_VENV) .cache .mypy_cache .ruff_cache .pytest_cache
