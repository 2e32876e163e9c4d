# Two commands are all a user needs: `make demo` and `make test`.
# Both create .venv on first use (about 1.5 min and 6.3 GB: torch's CUDA build, taken from local disk here)
# and reinstall only when pyproject.toml or constraints.txt change.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint figures venv clean real-results book lab tutorial-checkpoint

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[lab,dev,bench,distributed,docs]"
	# Register the venv's kernel under a fixed name so JupyterLab and papermill run notebooks in it.
	$(PY) -m ipykernel install --sys-prefix --name fsad-kit --display-name "Python (fsad-kit)" >/dev/null
	touch $(STAMP)

# Every notebook in smoke mode as a papermill batch (about 4 minutes on 2 cores); outputs under runs/smoke/.
demo: $(STAMP)
	$(PY) -m fsad demo

# The course website from the executed smoke notebooks (runs `make demo` first; finished notebooks are kept).
# Open runs/book/html/index.html; it needs no network (MathJax is served from the site).
book: $(STAMP)
	$(PY) -m fsad demo --resume
	$(PY) -m fsad.book --executed runs/smoke --out runs/book

# JupyterLab on notebooks/ with the kit's kernel (registered by the install step above).
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=notebooks --MultiKernelManager.default_kernel_name=fsad-kit

# pytest exits 5 when it collects no tests; that must fail too, not pass quietly.
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# What CI checks besides the tests (pre-commit runs the same tools on each commit: `pre-commit install`).
# Notebooks without outputs are checked by tests/test_notebooks.py.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Rebuild figures/*.png and figures/tables/*.csv through notebook 08 (see notebooks/grids/figures.yaml).
figures: $(STAMP)
	$(PY) -m fsad batch notebooks/grids/figures.yaml

clean:
	rm -rf runs figures/.cache .pytest_cache

# Real-data results quoted in README (CPU: about 2-3 hours on 2 cores; every command resumes).
# Data: ../shared/data (see README "Data"). Tables: python -m fsad report figures/results/<backbone>.
SHARED ?= ../shared/data
RES := figures/results
EVAL := $(PY) -m fsad evaluate --quiet --resume
BACKBONES := "mobilenet_v2 --weights imagenet" "resnet18 --weights random"
real-results: $(STAMP)
	for bb in $(BACKBONES); do set -- $$bb; tag=$$1; \
	  for row in "none --no-augment" "A" "patchcore --method patchcore" "patchcore_aug --method patchcore --augment all"; do \
	    set -- $$row; name=$$1; shift; \
	    $(EVAL) --backbone $$bb $$* --data-root $(SHARED)/mvtec_ad_subset --dataset mvtec --categories bottle --k 2 4 8 --runs 10 --out $(RES)/$$tag/$$name-bottle.json || exit 1; \
	    $(EVAL) --backbone $$bb $$* --data-root $(SHARED)/mpdd_subset --dataset mpdd --categories metal_plate --k 2 4 8 --runs 10 --out $(RES)/$$tag/$$name-metal_plate.json || exit 1; \
	    $(EVAL) --backbone $$bb $$* --data-root $(SHARED)/mvtec_ad_subset --dataset mvtec --categories capsule --k 2 --runs 10 --out $(RES)/$$tag/$$name-capsule.json || exit 1; \
	    $(EVAL) --backbone $$bb $$* --data-root $(SHARED)/mvtec_ad_256 --dataset mvtec --categories screw --k 2 4 8 --runs 10 --out $(RES)/$$tag/$$name-screw.json || exit 1; \
	  done; done
	$(PY) -m data_tools combine $(SHARED)/mvtec_ad_subset $(SHARED)/mvtec_ad_256 --out runs/mvtec_real --dataset mvtec
	# Registration-trained RegAD at 224 px (the 'trained' rows): one leave-one-out model per MVTec target, trained
	# on the other two; the capsule model (trained on bottle + screw) also scores MPDD metal_plate (unseen dataset).
	for bb in $(BACKBONES); do set -- $$bb; tag=$$1; ck=$(RES)/checkpoints_224/$$tag; \
	  for t in bottle screw capsule; do \
	    $(PY) -m fsad train --data-root runs/mvtec_real --dataset mvtec --target $$t --epochs 10 --backbone $$bb \
	      --out $$ck/$$t --resume --quiet || exit 1; done; \
	  $(EVAL) --backbone $$bb --checkpoint $$ck/bottle/last.pt --data-root $(SHARED)/mvtec_ad_subset --dataset mvtec --categories bottle --k 2 4 8 --runs 10 --out $(RES)/$$tag/trained-bottle.json || exit 1; \
	  $(EVAL) --backbone $$bb --checkpoint $$ck/capsule/last.pt --data-root $(SHARED)/mvtec_ad_subset --dataset mvtec --categories capsule --k 2 --runs 10 --out $(RES)/$$tag/trained-capsule.json || exit 1; \
	  $(EVAL) --backbone $$bb --checkpoint $$ck/capsule/last.pt --data-root $(SHARED)/mpdd_subset --dataset mpdd --categories metal_plate --k 2 4 8 --runs 10 --out $(RES)/$$tag/trained-metal_plate.json || exit 1; \
	  $(EVAL) --backbone $$bb --checkpoint $$ck/screw/last.pt --data-root $(SHARED)/mvtec_ad_256 --dataset mvtec --categories screw --k 2 4 8 --runs 10 --out $(RES)/$$tag/trained-screw.json || exit 1; \
	done
	$(PY) -m fsad ablation table5 --data-root runs/mvtec_real --dataset mvtec --categories bottle screw --k 2 4 8 \
	  --runs 5 --epochs 5 --image-size 128 --backbone mobilenet_v2 --weights imagenet \
	  --out $(RES)/table5_mvtec_mobilenet_128 --resume --quiet
	$(PY) -m fsad ablation table5 --data-root runs/mvtec_real --dataset mvtec --categories bottle screw --k 2 4 8 \
	  --runs 5 --epochs 5 --image-size 128 --backbone resnet18 --weights random \
	  --out $(RES)/table5_mvtec_resnet18random_128 --resume --quiet
	$(PY) -m fsad ablation table5 --data-root runs/mvtec_real --dataset mvtec --categories bottle --k 2 4 8 \
	  --runs 3 --epochs 3 --image-size 128 --backbone mobilenet_v2 --weights imagenet --train-backbone \
	  --out $(RES)/table5_mvtec_mobilenet_128_trainbackbone --resume --quiet
	$(PY) -m fsad ablation table7 --data-root runs/mvtec_real --dataset mvtec --categories bottle --k 2 4 8 \
	  --runs 2 --epochs 2 --image-size 128 --backbone mobilenet_v2 --weights imagenet \
	  --out $(RES)/table7_mvtec_mobilenet_128 --resume --quiet

# The small registration-trained checkpoint the tutorials (02, 03, 04) load by default, shipped as
# fsad/assets/tutorial_regad_mobilenet_v2.pt (+ .json sidecar: SHA-256, size, this command, the epoch losses).
# MobileNetV2 ImageNet backbone frozen, 128 px (the notebooks' smoke size), target capsule left out, trained on
# MVTec bottle + screw from ../shared/data. One CPU core: about 15-25 minutes.
TUTORIAL_RUN := runs/tutorial_checkpoint
tutorial-checkpoint: $(STAMP)
	$(PY) -m data_tools combine $(SHARED)/mvtec_ad_subset $(SHARED)/mvtec_ad_256 --out runs/mvtec_real --dataset mvtec
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice $(PY) -m fsad train --data-root runs/mvtec_real --dataset mvtec \
	  --target capsule --backbone mobilenet_v2 --weights imagenet --image-size 128 --epochs 20 --seed 0 \
	  --out $(TUTORIAL_RUN) --resume --quiet
	$(PY) -m fsad.pretrained export $(TUTORIAL_RUN)/last.pt
