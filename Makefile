# The two commands of the README: `make up` (set up + start the hub) and `make test` (set up + run all tests).
.PHONY: up test setup gen
up:
	scripts/setup.sh
	.venv/bin/exthub up
test:
	scripts/test.sh
setup:
	scripts/setup.sh
gen: setup
	.venv/bin/python -m tools.generate
