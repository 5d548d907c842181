#!/bin/sh
# make lint: clang-format, clang-tidy (warnings are errors) and tools/tidy.sh over the tracked
# C files (clang-format also over perf/), and pyflakes over the Python files. $1 is a build
# folder with compile_commands.json (the clang build).
set -eu
cd "$(dirname "$0")/.."
build=${1:-build/clang}
files=$(git ls-files 'src/*.c' 'src/*.h' 'tests/*.c' 'tests/*.h' 'perf/*.c' | grep -v -e generated -e '\.pb-c\.')

echo "lint: clang-format"
clang-format --dry-run --Werror $files

echo "lint: clang-tidy"
srcs=$(git ls-files 'src/*.c' | grep -v -e generated -e '\.pb-c\.')
# One process per file, two at a time: clang-tidy is single-threaded, and files sharing one
# process share the static analyzer's state (clang-tidy 14 reported an uninitialized va_list
# in base/log.c when base/heap.c ran before it in the same process).
printf '%s\n' $srcs | xargs -P "$(nproc)" -n 1 clang-tidy -p "$build" --quiet 2>/dev/null >/tmp/lint-tidy.$$ || {
    cat /tmp/lint-tidy.$$; rm -f /tmp/lint-tidy.$$; echo "lint: clang-tidy failed"; exit 1; }
rm -f /tmp/lint-tidy.$$

echo "lint: pyflakes"
# The tests and perf scripts: an unused import or variable, an undefined name (a typo in a
# branch a run may not reach).
/usr/bin/python3 -m pyflakes $(git ls-files '*.py')

echo "lint: tidy.sh"
./tools/tidy.sh
echo "lint: ok"
