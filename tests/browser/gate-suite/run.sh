#!/bin/sh
# The example gate suite as a release gate runs it: shard $1 of $2 of the test files, a spec
# report on stdout and a JUnit report at $CANARY_REPORT.
set -eu
cd "$(dirname "$0")"
exec node --test --test-shard="$1/$2" \
  --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=junit --test-reporter-destination="$CANARY_REPORT" \
  ./*.test.mjs
