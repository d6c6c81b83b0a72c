# The two set-up commands of the README: `make demo` and `make test`.
# Each creates its own virtualenv(s) and installs what it needs.

PYTHON ?= python3
DEMO_VENV := .venv
TEST_VENV := .venv-test
SDK1_VENV := .venv-sdk1
SDK20_VENV := .venv-sdk20
SDK21_VENV := .venv-sdk21
SAM_VENV  := .venv-sam
PIP_FLAGS := --disable-pip-version-check -q
# A hard ceiling per suite, so a hang fails CI in minutes instead of eating its whole budget.
# (pytest-timeout only covers the tests themselves, not interpreter shutdown.)
SUITE_TIMEOUT := timeout --kill-after=30 900

.PHONY: demo test venvs lint test-sdk3 test-chaos test-flow test-sdk1 test-sdk2x test-sdk20 test-sdk21 validate-template build \
	bench bench-peer soak prereqs clean

# The default run shows what the limiter adds on the installed SDK: the bare SDK, then the
# limiter, on the real clock, 15 to 20 s (docs/demo.md). DEMO_ARGS passes options through.
demo: $(DEMO_VENV)/.installed
	$(DEMO_VENV)/bin/durable-semaphore demo $(DEMO_ARGS)

# pip is quiet (-q), so say what the silent 20 to 30 s are before they start.
$(DEMO_VENV)/.installed: pyproject.toml
	@echo "make demo: installing durable-semaphore and its demo extra (the durable execution SDK" \
		"and its testing library, ministack, matplotlib) into $(DEMO_VENV); 20 to 30 s, once"
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(DEMO_VENV)/bin/pip install $(PIP_FLAGS) -e '.[demo]'
	touch $@

test: prereqs venvs lint
	$(TEST_VENV)/bin/python infra/dynamodb_local.py install  # once, before the suites share it
	$(MAKE) --no-print-directory -j2 --output-sync=target \
		test-sdk3 test-chaos test-flow test-sdk1 test-sdk20 test-sdk21 validate-template

# The suites run two at a time (each against a DynamoDB Local of its own): the 3.x suite in
# one slot, the chaos suite, the flow-control tests and then the older SDK lines in the other. They mostly wait (on
# durable timers, lease expiries and killed processes), so side by side they cost little more
# than the longest of them; one after another took 13 minutes.

# Every venv `make test` needs, built side by side: pip spends most of its time waiting on
# unpacking and the index, and five venvs one after another took about four minutes of CI.
VENVS := $(TEST_VENV)/.installed $(SDK1_VENV)/.installed $(SDK20_VENV)/.installed \
	$(SDK21_VENV)/.installed $(SAM_VENV)/.installed
venvs:
	$(MAKE) --no-print-directory -j5 $(VENVS)

prereqs:
	bash infra/bootstrap.sh

$(TEST_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(TEST_VENV)
	$(TEST_VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(TEST_VENV)/bin/pip install $(PIP_FLAGS) -e '.[dev]'
	touch $@

# Every SDK minor line that pyproject's range admits gets a venv: the newest patch of the line
# with a testing library that runs it (.venv-test is the 3.x line, with testing 1.4).
# $(call line_venv,VENV,SDK version,testing version[,extra pip flags for the testing library])
define line_venv
$(1)/.installed: pyproject.toml
	$(PYTHON) -m venv $(1)
	$(1)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(1)/bin/pip install $(PIP_FLAGS) -e . 'aws-durable-execution-sdk-python==$(2)' \
		pytest pytest-timeout hypothesis
	$(1)/bin/pip install $(PIP_FLAGS) $(4) 'aws-durable-execution-sdk-python==$(2)' \
		'aws-durable-execution-sdk-python-testing==$(3)'
	touch $$@
endef
# SDK 1.x limits threads, not operations: the bug this project fixes.
$(eval $(call line_venv,$(SDK1_VENV),1.7.0,1.2.1))
# SDK 2.0 resumes suspended branches in-process, which testing 1.2.1 cannot serve: after its
# checkpoint-token refusal the bare SDK spins forever (docs/sdk-integration.md). testing 1.3.0
# runs 2.0.1 (every SDK name it imports exists there) but declares SDK >= 2.1, hence --no-deps.
$(eval $(call line_venv,$(SDK20_VENV),2.0.1,1.3.0,--no-deps))
$(eval $(call line_venv,$(SDK21_VENV),2.1.0,1.3.0))

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
	$(SUITE_TIMEOUT) $(TEST_VENV)/bin/python -m pytest tests --ignore=tests/sdk1 \
		--ignore=tests/chaos $(foreach t,$(FLOW_TESTS),--ignore=$(t)) $(PYTEST_ARGS)

# Flow control through the SDK on the real clock (per-item keys, several limits, fairness,
# priorities, run-time limits, the tenants demo): about four minutes of mostly waiting, run
# in the chaos suite's slot so that the 3.x suite stays near six.
FLOW_TESTS := tests/sdk/test_flow.py tests/sdk/test_order.py tests/sdk/test_set_limit.py \
	tests/test_demo_tenants.py
test-flow: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/python infra/dynamodb_local.py install
	$(SUITE_TIMEOUT) $(TEST_VENV)/bin/python -m pytest $(FLOW_TESTS) $(PYTEST_ARGS)

# The chaos suite (tests/chaos) on the 3.x venv; `make soak` is its long version.
test-chaos: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/python infra/dynamodb_local.py install
	$(SUITE_TIMEOUT) $(TEST_VENV)/bin/python -m pytest tests/chaos $(PYTEST_ARGS)

# The 3.x venv runs everything above; the older lines run tests/lines (the seed scenario, a
# named limit across executions, limiter=None, the compatibility contract) and their extras.
test-sdk1: $(SDK1_VENV)/.installed
	$(SDK1_VENV)/bin/python infra/dynamodb_local.py install
	$(SUITE_TIMEOUT) $(SDK1_VENV)/bin/python -m pytest tests/lines tests/sdk1 $(PYTEST_ARGS)

test-sdk20: $(SDK20_VENV)/.installed
	$(SDK20_VENV)/bin/python infra/dynamodb_local.py install
	$(SUITE_TIMEOUT) $(SDK20_VENV)/bin/python -m pytest tests/lines $(PYTEST_ARGS)

# The two 2.x lines side by side (testing 1.3.0 skips durable time, so they are short and
# judged by counters and histories, not by timing); output is kept grouped per line.
test-sdk2x:
	$(MAKE) --no-print-directory -j2 --output-sync=target test-sdk20 test-sdk21

test-sdk21: $(SDK21_VENV)/.installed
	$(SDK21_VENV)/bin/python infra/dynamodb_local.py install
	$(SUITE_TIMEOUT) $(SDK21_VENV)/bin/python -m pytest tests/lines $(PYTEST_ARGS)

validate-template: $(TEST_VENV)/.installed $(SAM_VENV)/.installed
	@if [ -f template.yaml ]; then \
		$(TEST_VENV)/bin/cfn-lint template.yaml && \
		AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null SAM_CLI_TELEMETRY=0 \
		$(SAM_VENV)/bin/sam validate --lint -t template.yaml --region us-east-1; \
	else echo "no template.yaml yet"; fi

# `sam build` of template.yaml with the library of this checkout (docs/deploy.md). The functions'
# requirements.txt name durable-semaphore, which pip finds as a wheel built here into dist/
# (PIP_FIND_LINKS, added to any the shell has). sam build runs pip for the functions' runtime,
# python3.13, which must be on PATH. --no-cached: the wheel keeps its version when the code
# changes, so a cached build would keep the previous library.
SAM_PYTHON ?= python3.13
build: $(SAM_VENV)/.installed
	@$(SAM_PYTHON) --version >/dev/null 2>&1 || \
		{ echo "make build: sam build needs $(SAM_PYTHON) on PATH (the runtime)" >&2; exit 1; }
	rm -f dist/durable_semaphore-*.whl
	$(SAM_VENV)/bin/python -m pip wheel $(PIP_FLAGS) --no-deps -w dist .
	PIP_FIND_LINKS="$(CURDIR)/dist $$PIP_FIND_LINKS" SAM_CLI_TELEMETRY=0 \
		$(SAM_VENV)/bin/sam build --no-cached $(SAM_BUILD_ARGS)

bench: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/python infra/dynamodb_local.py install
	$(TEST_VENV)/bin/python bench/store_bench.py $(BENCH_ARGS)

# Side by side with dynamo-dlm (a bench-only dependency, the `bench` extra) on one DynamoDB Local.
bench-peer: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/pip install $(PIP_FLAGS) -e '.[bench]'
	$(TEST_VENV)/bin/python infra/dynamodb_local.py install
	$(TEST_VENV)/bin/python bench/peer_bench.py $(BENCH_ARGS)

# The long chaos run (tests/chaos is its short version, in `make test`): >= 100,000 operations
# from 8 processes with faults, kills, replays and DynamoDB Local restarts. Several minutes.
soak: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/python infra/dynamodb_local.py install
	$(TEST_VENV)/bin/python bench/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(DEMO_VENV) $(TEST_VENV) $(SDK1_VENV) $(SDK20_VENV) $(SDK21_VENV) $(SAM_VENV) .cache .mypy_cache .ruff_cache .pytest_cache \
		.aws-sam dist
