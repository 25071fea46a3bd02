# Every target sets itself up on a fresh clone: .venv is created and filled on first use.
PY := .venv/bin/python
PIP := .venv/bin/pip
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# The demo and the tests on one thread per process unless the caller sets OMP_NUM_THREADS:
# `make demo` took 1m16 on one thread, 4m36 on torch's default two, back to back on a busy 2-core
# Xeon (tiny models: threads mostly wait on each other); the tests pin one torch thread themselves
# (tests/conftest.py). The benchmarks keep torch's choice (their results record it).
ONE_THREAD := OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1}

.PHONY: install test test-all demo bench bench-gpu bench-digits bench-study bench-apps train-digits clean

.venv/.installed: pyproject.toml constraints.txt
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip -c constraints.txt
	$(PIP) install -q -c constraints.txt -e ".[test]"
	touch $@

install: .venv/.installed

# one pytest worker per core (pytest-xdist), a test file per worker: most of the suite's time is
# subprocess runs that each pay Lightning's ~8 s import, which one core cannot overlap
TEST_ARGS := -n auto --dist loadfile --durations=15

test: install
	$(ONE_THREAD) WANDB_MODE=offline $(PY) -m pytest -q $(TEST_ARGS) -m "not slow"

test-all: install
	$(ONE_THREAD) WANDB_MODE=offline $(PY) -m pytest -q $(TEST_ARGS)

demo: install
	$(ONE_THREAD) WANDB_MODE=offline .venv/bin/doodl fit -c configs/digits.yaml

# speed of every gradient mode, the one-step baseline and the reference emulation (tiny UNet, CPU);
# benchmarks/speed.py --scale sd15|sdxl for the published model sizes (slow on CPU)
bench: install
	$(PY) benchmarks/speed.py

# the GPU run (about 8 minutes on one H100/H200-class GPU): benchmarks/results/gpu.json
bench-gpu: install
	$(PY) benchmarks/gpu.py

# the digits benchmark as a comparison (configs/digits_compare.yaml), one rank per core (two ranks give
# the table of one: tests/run/test_compare.py); a rerun keeps the finished
# pairs of outputs/bench-digits (delete it for a fresh run); the summary goes to benchmarks/results/digits/
BENCH_DIGITS := outputs/bench-digits
bench-digits: install
	mkdir -p outputs
	RANK=1 WORLD_SIZE=2 $(ONE_THREAD) .venv/bin/doodl compare -c configs/digits_compare.yaml --output $(BENCH_DIGITS) \
	   > outputs/bench-digits-rank1.log 2>&1 & rank1=$$!; \
	RANK=0 WORLD_SIZE=2 $(ONE_THREAD) .venv/bin/doodl compare -c configs/digits_compare.yaml --output $(BENCH_DIGITS) \
	   && wait $$rank1
	mkdir -p benchmarks/results/digits
	cp $(BENCH_DIGITS)/summary.md $(BENCH_DIGITS)/summary.csv $(BENCH_DIGITS)/summary.json \
	   $(BENCH_DIGITS)/summary.png $(BENCH_DIGITS)/sheet.png benchmarks/results/digits/

# the equal-budget study of issue 13 at the tuned digits settings: configs/digits_study_tuned.yaml (seed
# search and DOODL at budgets 8 and 32) and digits_study_b128.yaml (budgets 2 and 128, unseen items only),
# read with the bench-digits folder (unguided, one-step, DOODL at 20
# iterations: same items and seeds), so run make bench-digits first; one rank per core
# (configs/digits_study.yaml is the first study, at the earlier settings: benchmarks/results/digits_study_v1/)
# (each part's summary to benchmarks/results/digits_study_<part>/, the study's table and plot to
# benchmarks/results/digits_study.{md,json,png})
STUDY := tuned b128
bench-study: install
	mkdir -p outputs
	set -e; for part in $(STUDY); do \
	  out=outputs/digits-study-$$part; \
	  RANK=1 WORLD_SIZE=2 $(ONE_THREAD) .venv/bin/doodl compare -c configs/digits_study_$$part.yaml --output $$out \
	     > $$out-rank1.log 2>&1 & rank1=$$!; \
	  RANK=0 WORLD_SIZE=2 $(ONE_THREAD) .venv/bin/doodl compare -c configs/digits_study_$$part.yaml --output $$out; \
	  wait $$rank1; \
	  mkdir -p benchmarks/results/digits_study_$$part; \
	  cp $$out/summary.md $$out/summary.json benchmarks/results/digits_study_$$part/; \
	done
	$(PY) benchmarks/digits_study.py $(BENCH_DIGITS) outputs/digits-study-tuned outputs/digits-study-b128

# the paper's other three applications in the digits world (issue 13): CLIP text guidance, boldness,
# personalization, each `doodl compare -c configs/digits_<app>_compare.yaml` on two ranks (one per
# core; two ranks give the table of one); summaries to benchmarks/results/digits_<app>/
APPS := clip bold personalize
bench-apps: install
	mkdir -p outputs
	set -e; for app in $(APPS); do \
	  out=outputs/bench-digits-$$app; \
	  RANK=1 WORLD_SIZE=2 $(ONE_THREAD) .venv/bin/doodl compare -c configs/digits_$${app}_compare.yaml --output $$out \
	     > $$out-rank1.log 2>&1 & rank1=$$!; \
	  RANK=0 WORLD_SIZE=2 $(ONE_THREAD) .venv/bin/doodl compare -c configs/digits_$${app}_compare.yaml --output $$out; \
	  wait $$rank1; \
	  mkdir -p benchmarks/results/digits_$$app; \
	  cp $$out/summary.md $$out/summary.csv $$out/summary.json $$out/summary.png $$out/sheet.png benchmarks/results/digits_$$app/; \
	done

train-digits: install
	$(PY) -m doodl.digits.train

clean:
	rm -rf .venv outputs
