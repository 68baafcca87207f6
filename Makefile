# Open RISC-V IOMMU: simulation, tests, Verilog, waveforms, benchmarks, synthesis.
# Everything is installed into .venv from pyproject.toml on first use.

PYTHON      ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
SIM         ?= verilator
SCENARIO    ?= default
PRESET      ?= default
SEED        ?=
JOBS        ?= 2
REGRESS_N   ?= 100000
export SIM

.PHONY: all install sim test regress verilog lint waves wave-demo bench synth clean help

all: test

help:
	@echo "make sim [SCENARIO=name] [SIM=verilator|icarus]  run a scenario and print its report"
	@echo "make test                                       run the test suite (model + RTL)"
	@echo "make regress [REGRESS_N=100000] [SEED=n]        long random differential run"
	@echo "make verilog [PRESET=small|default|large]       write build/iommu.v"
	@echo "make lint                                       Verilator lint of build/iommu.v"
	@echo "make wave-demo                                  record one miss and some hits (FST)"
	@echo "make waves                                      open the last waveform in GTKWave"
	@echo "make bench                                      measure model and RTL performance"
	@echo "make synth [PRESET=small|default|large|all]     ECP5-85k area/Fmax estimates (yowasp, minutes)"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	@touch $@

install: $(STAMP)

sim: $(STAMP)
	$(PY) -m sim run $(SCENARIO) $(if $(SEED),--seed $(SEED))

test: $(STAMP)
	$(PY) -m pytest -n $(JOBS) tests

regress: $(STAMP)
	$(PY) -m tests.regress --transactions $(REGRESS_N) $(if $(MINUTES),--minutes $(MINUTES)) $(if $(SEED),--seed $(SEED)) --jobs $(JOBS)

verilog: $(STAMP)
	$(PY) -m rtl.generate --preset $(PRESET) -o build/iommu.v

lint: verilog
	$(PY) -m rtl.lint build/iommu.v

waves: $(STAMP)
	@f=$$(cat build/last_wave.txt 2>/dev/null); \
	 if [ -z "$$f" ]; then echo "no waveform yet: run 'make wave-demo' or WAVES=1 make test first"; exit 1; fi; \
	 $(PY) -m sim.waves "$$f" build/last_wave.gtkw >/dev/null && \
	 echo "gtkwave $$f build/last_wave.gtkw" && gtkwave "$$f" build/last_wave.gtkw

wave-demo: $(STAMP)
	$(PY) -m tb.runner tb.tests.test_core_basic --waves --testcase waveform_hit_and_miss

bench: $(STAMP)
	$(PY) -m sim.bench

synth: $(STAMP)
	$(PY) -m pip install -q -e '.[fpga]'
	$(PY) -m rtl.synth --preset $(PRESET) --jobs $(JOBS)

clean:
	rm -rf build sim_build .pytest_cache
