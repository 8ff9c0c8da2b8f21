# crosslab: two commands for learners (`make lab`, `make test`), a few more for authors.
# Every target first makes sure the virtual environment matches requirements.lock
# (scripts/setup_venv.sh: builds it on first use, does nothing when it is current).

VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
PORT   ?=
export VENV PYTHON

.PHONY: help setup lab app test lint unit nbval course notebooks results robustness docs bench lock-env clean

help:
	@echo "make lab       start JupyterLab on the course (sets up .venv on first use)"
	@echo "make app       serve the search app as a web page (DIR=folder PIPELINE=a,b PORT=...)"
	@echo "make test      ruff + unit tests + nbval over every notebook"
	@echo "make course    run every lesson headless, in order, and time it"
	@echo "make notebooks re-execute the lessons in place (authors: commit the outputs)"
	@echo "make results   score the named pipelines once on test (docs/results/experiments.json), render the docs"
	@echo "make robustness lesson 14: corruptions, attacks, defences chosen on val (docs/results/robustness.json)"
	@echo "make docs      re-render every generated table of the docs from its JSON"
	@echo "make bench     run benchmarks/ and write benchmarks/RESULTS.md"

setup:
	@bash scripts/setup_venv.sh

lab: setup
	@bash scripts/lab.sh $(or $(PORT),8888)

# The search app over a folder of pictures (default: the clip art) as a standalone page (Voila).
app: setup
	@PORT="$(PORT)" DIR="$(DIR)" PIPELINE="$(PIPELINE)" bash scripts/app.sh

lint: setup
	$(PY) -m ruff check crosslab tests benchmarks scripts

unit: setup
	$(PY) -m pytest tests

nbval: setup
	$(PY) -m pytest --nbval notebooks --nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider

test: setup
	$(PY) -m ruff check crosslab tests benchmarks scripts
	$(PY) -m pytest tests notebooks --nbval --nbval-sanitize-with notebooks/sanitize.cfg

# Every lesson in order, twice: from a new empty feature cache, then warm (your cache is untouched).
course: setup
	$(PY) scripts/run_course.py --cold-warm

notebooks: setup
	$(PY) scripts/run_course.py --inplace

results: setup
	$(PY) scripts/experiments.py
	$(PY) scripts/render_docs.py

# Lesson 14's corruptions, attacks and defences (about 25 minutes on 2 cores): docs/results/robustness.json.
robustness: setup
	$(PY) scripts/robustness.py
	$(PY) scripts/render_docs.py

docs: setup
	$(PY) scripts/render_docs.py

bench: setup
	$(PY) -m benchmarks.run

lock-env:
	$(PYTHON) scripts/sync_environment.py

clean:
	rm -rf build .pytest_cache
