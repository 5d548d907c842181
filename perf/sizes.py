#!/usr/bin/python3
"""The build mix's size model (src/client/bench_mix.c): counts the regular files under the
folders given (default /usr/lib and /usr/include) by power-of-two size class and prints the
table as the C array bench_mix.c holds, with the shares. Empty files count in class 1.

usage: perf/sizes.py [DIR...]
"""

import os
import stat
import sys


def main():
    roots = sys.argv[1:] or ["/usr/lib", "/usr/include"]
    counts = [0] * 64
    total = size_sum = 0
    for root in roots:
        for dirpath, _, files in os.walk(root):
            for name in files:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                counts[max(1, st.st_size.bit_length())] += 1
                total += 1
                size_sum += st.st_size
    last = max(k for k in range(64) if counts[k])
    print("/* %d files, %.2f GB, mean %.0f bytes, under %s */" % (
        total, size_sum / 1e9, size_sum / max(total, 1), " ".join(roots)))
    print("static const uint32_t size_classes[] = {")
    row = []
    for k in range(last + 1):
        row.append("%d," % counts[k])
        if len(row) == 10 or k == last:
            print("    " + " ".join(row))
            row = []
    print("};")
    cum = 0
    for k in range(1, last + 1):
        cum += counts[k]
        lo = 1 if k == 1 else 1 << (k - 1)
        print("# %10d..%-10d %6.2f%% %7.2f%%" % (lo, (1 << k) - 1, 100.0 * counts[k] / total,
                                               100.0 * cum / total))


if __name__ == "__main__":
    main()
