# Two commands for a newcomer: `make book` and `make test` (see README.md).
PYTHON ?= python3.11
VENV   := .venv
COURSE ?= _build/course
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install book student-book assignments test lab samples reader format browser-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[book,test]"
	$(BIN)/python -m ipykernel install --prefix $(VENV) --name python3 --display-name "Python 3 (.venv)"
	touch $(STAMP)

install: $(STAMP)  ## create or update .venv (idempotent)

book: $(STAMP)  ## build the HTML book on data_samples/, zero warnings
	$(BIN)/jupyter-book build . -W --keep-going
	@echo "Book built: $(abspath _build/html/index.html)"

student-book: $(STAMP)  ## the students' edition: solutions hidden, solution code removed
	$(BIN)/python -m helpers.classroom student-book _build/student
	$(BIN)/jupyter-book build _build/student -W --keep-going
	@echo "Student book built: $(abspath _build/student/_build/html/index.html)"

assignments: $(STAMP)  ## the chapters as an nbgrader course in $(COURSE): student notebooks in release/
	$(BIN)/python -m helpers.classroom assignments $(COURSE)

test: $(STAMP)  ## every test: helpers and nbval over the chapters
	$(BIN)/python -m pytest tests
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env chapters

lab: $(STAMP)  ## JupyterLab from the venv
	$(BIN)/jupyter lab

reader: $(STAMP)  ## rewrite notebooks/, the chapters in plain Markdown for Colab and GitHub
	$(BIN)/python -m tools.reader notebooks

format: $(STAMP)  ## format the chapters' code (ruff, 88 columns)
	$(BIN)/ruff format chapters

samples: $(STAMP)  ## regenerate the synthetic folders of data_samples/ (the real ones stay)
	$(BIN)/python -m tools.samples data_samples/

# The browser test: Debian's Chromium driven by Playwright (never `playwright install`:
# no browser download), over the built book and over chapters 1 and 9 in JupyterLab.
CHROMIUM       := /usr/bin/chromium
BROWSER_STAMP  := $(VENV)/.browser-installed
BOOK_SOURCES   := _config.yml _toc.yml intro.md references.bib $(wildcard chapters/*.ipynb appendix/*.md _ext/*.py _static/*.css)

$(CHROMIUM):
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver

$(BROWSER_STAMP): $(STAMP)
	$(BIN)/python -m pip install -e ".[browser]"
	touch $(BROWSER_STAMP)

_build/html/index.html: $(BOOK_SOURCES) | $(STAMP)   # the book, rebuilt only when its sources change
	$(MAKE) book || (rm -f $@; exit 1)
	touch $@

browser-test: $(CHROMIUM) $(BROWSER_STAMP) _build/html/index.html  ## pages and JupyterLab in a real browser
	BOOK_BROWSER_TEST=1 $(BIN)/python -m pytest tests/browser -p no:cacheprovider -q -rxXf

clean:
	rm -rf _build
