# The two commands a new user types: `make run` and `make test`. Everything else wraps CMake.
#
#   make run     install what is missing, build a release binary, serve on 127.0.0.1:8980
#                with ./ringcas-data
#   make test    install what is missing, build with ASan+UBSan, run every test (ctest),
#                then the TSan build of the ring and blob tests (`make tsan`) and of the
#                server under five integration suites (`make tsan-server`), `make lint`
#                and, from lint's clang build, the tests that need glibc's own allocator
#   make lint    clang build and gcc -O3 build (warnings are errors), clang-format,
#                clang-tidy, tools/tidy.sh
#   make release build the release binary only (build/release/src/ringcas)

JOBS   ?= $(shell nproc)
LISTEN ?= 127.0.0.1:8980
DIR    ?= ./ringcas-data

.PHONY: run test lint release asan tsan tsan-server tsan-ring format deps deps-test clean

run: release
	./build/release/src/ringcas serve --listen '$(LISTEN)' --dir '$(DIR)'

deps:
	@./scripts/deps.sh build

deps-test:
	@./scripts/deps.sh test

release: deps
	cmake --preset release >/dev/null
	cmake --build build/release -j$(JOBS)

asan: deps-test
	cmake --preset asan >/dev/null
	cmake --build build/asan -j$(JOBS)

test: asan
	cd build/asan && ctest --output-on-failure -j$(JOBS) --timeout 900
	$(MAKE) tsan
	$(MAKE) tsan-server
	$(MAKE) lint
	# What needs the C library's own allocator (sanitizers replace it): from the clang build.
	cd build/clang && ctest --output-on-failure -L '^plain$$' --timeout 600

# Threads meet in the ring, in the storage engine (shared index and segment table, the
# evictor thread) and in the access log's rings: their tests run again under
# ThreadSanitizer, where any report fails the test (compat/tsan_report checks that;
# compat/criterion the stand-in's comparisons). One test at a time: the ring tests want both
# cores.
tsan: deps-test
	cmake --preset tsan >/dev/null
	cmake --build build/tsan -j$(JOBS) --target ring_tests blob_tests compat_tests rpc_thread_tests
	cd build/tsan && ctest --output-on-failure -L '^(ring|blob|compat|threads)$$' --timeout 600

# The whole server under ThreadSanitizer, driven by the integration tests that use two cores,
# scrape /metrics and stop it (cores, the evictor, refresh copies, the metrics tables): a
# report makes the server exit 66 and the test that stops it fails. Three races were found
# this way that no unit test reached (docs/CONTRIBUTING.md lists the rest of the files).
tsan-server: deps-test
	cmake --preset tsan >/dev/null
	cmake --build build/tsan -j$(JOBS) --target ringcas deny wallskew
	cd build/tsan && TSAN_OPTIONS=second_deadlock_stack=1 ctest --output-on-failure \
		-R '^integration/(evict|reapi|h2|http_cache|serve)$$' --timeout 900

# The name this step had when it ran only the ring tests.
tsan-ring: tsan

lint: deps-test
	cmake --preset clang >/dev/null
	cmake --build build/clang -j$(JOBS)
	# CMake's plain Release build (-O3) is what a packager runs: gcc warns there about
	# things the presets' -O1/-O2 builds never see.
	cmake --preset gcc-o3 >/dev/null
	cmake --build build/gcc-o3 -j$(JOBS)
	./tools/lint.sh build/clang

format:
	git ls-files '*.c' '*.h' | grep -v -e generated -e '\.pb-c\.' | xargs clang-format -i

clean:
	rm -rf build
