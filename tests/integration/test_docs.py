"""The operator docs against the binary they describe: a user types what README.md and docs/
show, and an operator builds dashboards and alerts from docs/operations.md's tables. So:

- every flag of `ringcas serve --help` is a row of docs/operations.md's flag table ("Flags of
  `ringcas serve`") with the same environment twin and default, and the table names no flag
  the binary lacks; every flag of put, get, stat and fsck is in docs/cli.md (with its default
  where the help shows one);
- every metric GET /metrics exposes is a row of docs/operations.md's "Every series" with its
  type and its labels, every row names a metric the server exposes, and every `ringcas_*` name
  anywhere in README.md and docs/ (performance.md, a log of measurements, aside) is one the
  server exposes (or a histogram's series, or a family's prefix such as `ringcas_blob_`);
- docs/grpc.md's metric table gives each metric the type the server gives it;
- every link between the docs resolves, to the file and to its #anchor.

The docs had drifted both ways: half of what /metrics exposes (`ringcas_requests_in_flight`,
`ringcas_timeouts_total`, `ringcas_blob_write_errors_total`, ...) was named nowhere, and five
of serve's flags were documented only in docs/storage.md."""

import http.client
import os
import re
import subprocess
import unittest

import harness

DOCS = os.path.join(harness.ROOT, "docs")
# A log of measurements, not a reference: it may name counters of older builds.
NOT_REFERENCE = {"performance.md"}


def read(path):
    with open(os.path.join(harness.ROOT, path)) as f:
        return f.read()


def doc_files():
    names = sorted(n for n in os.listdir(DOCS) if n.endswith(".md") and n not in NOT_REFERENCE)
    return ["README.md"] + ["docs/" + n for n in names]


def section(text, heading):
    """The lines of <text> under the heading whose title is <heading>, up to the next heading
    of the same or a higher level."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"(#+) (.*)$", line)
        if m and m.group(2).strip() == heading:
            level = len(m.group(1))
            out = []
            for rest in lines[i + 1:]:
                h = re.match(r"(#+) ", rest)
                if h and len(h.group(1)) <= level:
                    break
                out.append(rest)
            return "\n".join(out)
    raise AssertionError("no section %r" % heading)


def table_rows(text):
    """The cells of every table row in <text> but header and separator rows."""
    rows = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("|") or re.fullmatch(r"\|[-| ]+\|", line):
            continue
        if i + 1 < len(lines) and re.fullmatch(r"\|[-| ]+\|", lines[i + 1]):
            continue  # a header
        # A \| inside a cell (`group\|always\|none`) is no cell boundary.
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows.append(cells)
    return rows


def help_flags(cmd):
    """{flag name: (metavar or None, default or None, twin or None)} of `ringcas CMD --help`,
    --help itself left out."""
    r = subprocess.run([harness.binary(), cmd, "--help"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    flags = {}
    for line in r.stdout.splitlines():
        m = re.match(r"  --(\[no-\])?([a-z0-9-]+)(?: ([^ ]+))?\s{2,}", line)
        if not m or m.group(2) == "help":
            continue
        d = re.search(r"\(default ([^)]*)\) \[", line)
        t = re.search(r"\[(RINGCAS_[A-Z_]+)\]$", line)
        flags[m.group(2)] = (m.group(3), d.group(1) if d else None, t.group(1) if t else None)
    return flags


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation but - and _ dropped, spaces -."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


class Flags(unittest.TestCase):
    def test_every_serve_flag_is_in_the_operations_table(self):
        flags = help_flags("serve")
        self.assertGreater(len(flags), 20)
        text = section(read("docs/operations.md"), "Flags of `ringcas serve`")
        documented = {}
        for cells in table_rows(text):
            m = re.fullmatch(r"`--(?:\[no-\])?([a-z0-9-]+)(?: ([^`]+))?`", cells[0])
            self.assertIsNotNone(m, cells)
            # "(none)": --help prints no default (an empty string, such as --access-log's).
            default = None if cells[2] == "(none)" else cells[2].strip("`")
            documented[m.group(1)] = (m.group(2), default, cells[1].strip("`"))
        self.assertEqual(sorted(set(flags) - set(documented)), [], "flags not in the table")
        self.assertEqual(sorted(set(documented) - set(flags)), [], "rows for no flag")
        for name, (metavar, default, twin) in flags.items():
            self.assertEqual(documented[name], (metavar, default, twin), name)

    def test_every_client_flag_is_in_cli_md(self):
        text = read("docs/cli.md")
        rows = {}
        for cells in table_rows(text):
            for m in re.finditer(r"`--([a-z0-9-]+)(?: [^`]+)?`", cells[0]):
                rows[m.group(1)] = cells[1]
        for cmd in ("put", "get", "stat"):
            for name, (metavar, default, twin) in help_flags(cmd).items():
                self.assertIn(name, rows, "%s --%s is not in docs/cli.md's flag table" % (cmd, name))
                if default is not None:
                    # The cell starts with the default as --help prints it: `30s`, `0` (none).
                    self.assertTrue(rows[name].startswith("`%s`" % default) or
                                    (default == "off" and rows[name] == "off"),
                                    "%s --%s: help says %s, docs/cli.md %s" %
                                    (cmd, name, default, rows[name]))
        for name in help_flags("fsck"):
            self.assertIn("`ringcas fsck --%s" % name, text)

    def test_every_flag_the_docs_name_exists(self):
        """A `--flag` in a table's first column of the operator docs is a flag of some
        command: a renamed or removed flag leaves no row behind."""
        known = {"help"}
        for cmd in ("serve", "put", "get", "stat", "fsck", "bench"):
            known.update(help_flags(cmd))
        for path in ("docs/operations.md", "docs/storage.md", "docs/cli.md", "docs/bench.md"):
            for cells in table_rows(read(path)):
                for m in re.finditer(r"^`--(?:\[no-\])?([a-z0-9-]+)", cells[0]):
                    self.assertIn(m.group(1), known, "%s names --%s" % (path, m.group(1)))


class Metrics(harness.ServerTestCase):
    def exposed(self):
        """{family: type} from the # TYPE lines, and {family: set of label names} of its
        series, after a little traffic on every kind of route."""
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        try:
            for method, path, body in (("PUT", "/docs/key", b"value"), ("GET", "/docs/key", None),
                                       ("GET", "/cas/" + "0" * 64, None),
                                       ("GET", "/healthz", None)):
                conn.request(method, path, body=body)
                conn.getresponse().read()
        finally:
            conn.close()
        text = self.server.metrics_text()
        types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
        labels = {}
        for name, lab, _ in harness.parse_metrics(text):
            fam = name
            if name not in types:
                fam = re.sub(r"_(bucket|sum|count)$", "", name)
                self.assertEqual(types.get(fam), "histogram", name)
            labels.setdefault(fam, set()).update(lab)
        return types, labels

    def documented(self):
        """{name: (type, labels or None)} from operations.md's "Every series" tables."""
        text = section(read("docs/operations.md"), "Every series")
        out = {}
        for cells in table_rows(text):
            names = re.findall(r"`(ringcas_[a-z0-9_]+)`", cells[0])
            self.assertTrue(names, cells)
            labels = None
            if len(cells) == 4:
                labels = set(re.findall(r"`([a-z]+)`", cells[2]))
            for n in names:
                self.assertNotIn(n, out, "%s has two rows" % n)
                out[n] = (cells[1], labels)
        return out

    def test_every_series_is_documented_with_its_type_and_labels(self):
        types, labels = self.exposed()
        self.assertGreater(len(types), 80)
        doc = self.documented()
        self.assertEqual(sorted(set(types) - set(doc)), [], "exposed, not documented")
        self.assertEqual(sorted(set(doc) - set(types)), [], "documented, not exposed")
        for name, kind in types.items():
            self.assertEqual(doc[name][0], kind, name)
            want = doc[name][1] if doc[name][1] is not None else {"core"}
            if name in labels:  # a family with no series yet has no labels to compare
                self.assertEqual(labels[name], want, name)
        # The request metrics have series after the traffic above: their labels were compared.
        for name in ("ringcas_requests_total", "ringcas_request_duration_seconds",
                     "ringcas_requests_in_flight", "ringcas_request_bytes_total"):
            self.assertIn(name, labels)

    def test_help_lines_speak_the_operator_s_words(self):
        """A # HELP line is the doc a dashboard shows: the flags it names exist, and it names
        no field of the source (`ringcas_blob_pool_bytes` said "at most read_buffer_max / 8",
        a name no flag or doc has; the flag is --read-memory)."""
        text = self.server.metrics_text()
        flags = set(help_flags("serve"))
        helps = re.findall(r"^# HELP (\S+) (.*)$", text, re.M)
        self.assertGreater(len(helps), 80)
        for name, help_text in helps:
            for flag in re.findall(r"--([a-z0-9-]+)", help_text):
                self.assertIn(flag, flags, "%s: %s" % (name, help_text))
            words = set(re.findall(r"\b[a-z0-9]+_[a-z0-9_]+\b", help_text)) - {"io_uring"}
            self.assertEqual(words, set(), "%s: %s" % (name, help_text))

    def test_grpc_md_gives_each_metric_its_type(self):
        types, _ = self.exposed()
        text = section(read("docs/grpc.md"), "Metrics")
        rows = 0
        for cells in table_rows(text):
            for n in re.findall(r"`(ringcas_[a-z0-9_]+)`", cells[0]):
                rows += 1
                self.assertEqual(types.get(n), cells[1], n)
        self.assertGreater(rows, 10)

    def test_every_metric_name_in_the_docs_is_exposed(self):
        types, _ = self.exposed()
        series = set(types)
        for name, kind in types.items():
            if kind == "histogram":
                series.update(name + s for s in ("_bucket", "_sum", "_count"))
        for path in doc_files():
            for n in sorted(set(re.findall(r"\bringcas_[a-z0-9_]+", read(path)))):
                if n.endswith("_"):  # a family: ringcas_blob_<name>
                    self.assertTrue(any(s.startswith(n) for s in series), (path, n))
                else:
                    self.assertTrue(n in series, "%s names %s, which /metrics lacks" % (path, n))


class Links(unittest.TestCase):
    def test_links_resolve_to_files_and_anchors(self):
        anchors = {}

        def anchors_of(path):
            if path not in anchors:
                heads = re.findall(r"^#+ (.*)$", read(path), re.M)
                anchors[path] = {slug(h) for h in heads}
            return anchors[path]

        checked = 0
        for path in doc_files():
            base = os.path.dirname(path)
            for target in re.findall(r"\]\(([^)\s]+)\)", read(path)):
                if re.match(r"[a-z]+:", target):
                    continue
                file, _, anchor = target.partition("#")
                dest = os.path.normpath(os.path.join(base, file)) if file else path
                self.assertTrue(os.path.exists(os.path.join(harness.ROOT, dest)),
                                "%s links to %s" % (path, target))
                if anchor:
                    self.assertIn(anchor, anchors_of(dest), "%s links to %s" % (path, target))
                checked += 1
        self.assertGreater(checked, 3)


if __name__ == "__main__":
    unittest.main()
