# Open RISC-V IOMMU: simulation, tests, Verilog, waveforms, benchmarks, synthesis.
# Everything is installed into .venv from pyproject.toml on first use.

PYTHON      ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
SIM         ?= verilator
SCENARIO    ?= tour
BACKEND     ?= rtl
WAVES       ?= 1
PRESET      ?= default
SEED        ?=
JOBS        ?= 2
REGRESS_N   ?= 100000
export SIM

.PHONY: all install sim scenarios test regress verilog lint waves wave-demo bench synth clean help

all: test

help:
	@echo "make sim [SCENARIO=tour|name] [BACKEND=rtl|model] [SIM=verilator|icarus] [PRESET=..] [WAVES=0]"
	@echo "                                                run scenarios on the RTL (default: the tour) and print the report"
	@echo "make scenarios                                  list the scenarios and their parameters"
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
	$(PY) -m sim run $(SCENARIO) --backend $(BACKEND) $(if $(SEED),--seed $(SEED)) \
	  $(if $(filter rtl,$(BACKEND)),--preset $(PRESET) $(if $(filter 0,$(WAVES)),--no-waves))

scenarios: $(STAMP)
	$(PY) -m sim list

test: $(STAMP)
	$(PY) -m pytest -n $(JOBS) tests

regress: $(STAMP)
	$(PY) -m tests.regress --transactions $(REGRESS_N) $(if $(MINUTES),--minutes $(MINUTES)) $(if $(SEED),--seed $(SEED)) --jobs $(JOBS)

verilog: $(STAMP)
	$(PY) -m rtl.generate --preset $(PRESET) -o build/iommu.v

lint: verilog
	$(PY) -m rtl.lint build/iommu.v

waves: $(STAMP)
	@f=build/sim/$(SCENARIO)/waves.fst; [ -f "$$f" ] || f=$$(cat build/last_wave.txt 2>/dev/null); \
	 if [ -z "$$f" ]; then echo "no waveform yet: run 'make sim' (or 'make wave-demo') first"; exit 1; fi; \
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
