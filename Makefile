# ropevit: the two commands are `make setup demo` (set up, then the main job) and `make setup test`.
PY := .venv/bin/python
.PHONY: setup test demo demo-seg clean

setup:                ## create .venv and install the stack (mmcv built once, cached in ~/.cache/ropevit)
	bash tools/setup_env.sh

test: setup           ## the test suite (what CI runs)
	$(PY) -m pytest -q tests

demo: setup           ## the main job: train + evaluate a RoPE-Swin Mask R-CNN on generated COCO-format data
	$(PY) tools/demo.py

demo-seg: setup       ## the segmentation demo: RoPE-Swin UperNet on generated ADE20k-layout data
	$(PY) tools/demo_seg.py

clean:
	rm -rf .venv work_dirs
