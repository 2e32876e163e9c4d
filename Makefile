# Two commands are all a user needs: `make demo` and `make test`.
# Both create .venv on first use (about 1.5 min and 6.3 GB: torch's CUDA build, taken from local disk here)
# and reinstall only when pyproject.toml or constraints.txt change.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test figures venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	# Register the venv's kernel under a fixed name so JupyterLab and papermill run notebooks in it.
	$(PY) -m ipykernel install --sys-prefix --name fsad-kit --display-name "Python (fsad-kit)" >/dev/null
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m fsad demo

# pytest exits 5 when it collects no tests; that must fail too, not pass quietly.
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

figures: $(STAMP)
	$(PY) -m fsad figures

clean:
	rm -rf runs figures/.cache .pytest_cache
