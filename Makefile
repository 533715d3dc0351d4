.DEFAULT_GOAL := help
UV ?= uv

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

install: ## Create .venv from uv.lock (dev tools included)
	$(UV) sync --frozen

run: ## Main job on the embedded default: features -> Feast -> training (two as_of dates)
	$(UV) run --frozen python -m flows.main

features: ## Rebuild feature tables, feast apply, backfill the online store
	$(UV) run --frozen python -m flows.features

train: ## One training run; AS_OF=2013-06-01 N_TRIALS=20
	$(UV) run --frozen python -m flows.training $(if $(AS_OF),--as-of $(AS_OF)) $(if $(N_TRIALS),--n-trials $(N_TRIALS))

test: ## Run the whole test suite (what CI runs)
	$(UV) run --frozen pytest

test-fast: ## The tests without the real stack and the end-to-end flows (a few minutes)
	$(UV) run --frozen pytest -m "not e2e and not slow"

lint: ## ruff lint + format check, mypy (what CI runs before the tests)
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy

format: ## Format the code
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

mlflow-ui: ## MLflow UI on the embedded store (http://127.0.0.1:5000)
	$(UV) run --frozen mlflow ui --backend-store-uri sqlite:///.evergreen/mlflow.db --host 127.0.0.1 --port 5000

prefect-ui: ## Prefect server and UI on the flows' Prefect state (http://127.0.0.1:4200)
	PREFECT_HOME="$${PREFECT_HOME:-$${EVERGREEN_HOME:-.evergreen}/prefect}" $(UV) run --frozen prefect server start --host 127.0.0.1

drift: ## Drift check; AS_OF=2013-12-20
	$(UV) run --frozen python -m flows.drift $(if $(AS_OF),--as-of $(AS_OF))

replay: ## Replay 2013 week by week: static vs always-retrain vs Evergreen; START=2013-03-01 WEEKS=3 N_TRIALS=2 OUT=dir
	$(UV) run --frozen python -m flows.replay $(if $(START),--start $(START)) $(if $(WEEKS),--weeks $(WEEKS)) $(if $(N_TRIALS),--n-trials $(N_TRIALS)) $(if $(OUT),--output $(OUT))

gateway: ## Serving gateway on 127.0.0.1:8800 (EVERGREEN_ROLLOUT_SECRET enables /rollout)
	$(UV) run --frozen python -m deployments.gateway

rollout: ## Canary rollout of a version; VERSION=3 (default: @challenger)
	$(UV) run --frozen python -m flows.rollout $(if $(VERSION),--version $(VERSION))

stack-up: ## Start Prefect server, process worker and MLflow server in the background
	$(UV) run --frozen python -m deployments.stack up

stack-down: ## Stop the local stack
	$(UV) run --frozen python -m deployments.stack down

deploy: ## prefect deploy --all against the local stack
	PREFECT_API_URL=http://127.0.0.1:4200/api $(UV) run --frozen prefect --no-prompt deploy --all

status: ## Registry aliases; `make rollback REASON=...` to roll back
	$(UV) run --frozen evergreen status

rollback: ## Move champion back to previous_champion (REASON required)
	$(UV) run --frozen evergreen rollback --reason "$(REASON)"

clean: ## Remove the local state folder (.evergreen)
	rm -rf .evergreen

.PHONY: help install run features train drift replay gateway rollout stack-up stack-down deploy test test-fast lint format mlflow-ui prefect-ui status rollback clean
