"""deploy/ read as an operator would, checked against the binary instead of a cluster:

- every flag and RINGCAS_* variable that deploy/Dockerfile and deploy/k8s/ringcas.yaml set is
  one `ringcas serve --help` lists, and a server started with the manifest's flags and
  variables serves the probes' paths and the scrape path;
- the data folder, the port and the user agree between the image and the StatefulSet, and
  the grace period is longer than --drain-timeout;
- the memory limit covers docs/operations.md's per-core bounds (section Memory) for the
  cores the manifest gives the server;
- the Docker build context (.dockerignore) leaves out local builds and data folders.
"""

import http.client
import json
import os
import re
import subprocess
import unittest

import yaml

import harness

DEPLOY = os.path.join(harness.ROOT, "deploy")
UNITS = {"": 1, "B": 1, "K": 1 << 10, "KiB": 1 << 10, "KB": 1 << 10, "M": 1 << 20,
         "MiB": 1 << 20, "MB": 1 << 20, "G": 1 << 30, "GiB": 1 << 30, "GB": 1 << 30,
         "T": 1 << 40, "TiB": 1 << 40, "TB": 1 << 40}
K8S_UNITS = {"": 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
             "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def size(text, units=UNITS):
    m = re.fullmatch(r"(\d+)([A-Za-z]*)", text)
    return int(m.group(1)) * units[m.group(2)]


def seconds(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", text)
    return int(m.group(1)) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[m.group(2)]


def serve_help():
    """{flag: default text} and the set of RINGCAS_* twins of `ringcas serve --help`."""
    text = subprocess.run([harness.binary(), "serve", "--help"], capture_output=True,
                          text=True, check=True).stdout
    flags = {}
    twins = set()
    for line in text.splitlines():
        m = re.match(r"\s+--(?:\[no-\])?([a-z-]+)", line)
        if not m:
            continue
        d = re.search(r"\(default ([^)]*)\)", line)
        flags[m.group(1)] = d.group(1) if d else None
        twins.update(re.findall(r"\[(RINGCAS_[A-Z_]+)\]", line))
    return flags, twins


def statefulset():
    with open(os.path.join(DEPLOY, "k8s", "ringcas.yaml")) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet"]
    return sts, docs


def flag_values(args):
    """--name value pairs (or --name=value) of a container's args."""
    out = {}
    i = 0
    while i < len(args):
        name = args[i]
        assert name.startswith("--"), args
        if "=" in name:
            k, v = name[2:].split("=", 1)
            out[k] = v
            i += 1
        else:
            out[name[2:]] = args[i + 1]
            i += 2
    return out


def dockerfile():
    """ENV variables, VOLUME, EXPOSE, the useradd uid and the ENTRYPOINT of deploy/Dockerfile."""
    with open(os.path.join(DEPLOY, "Dockerfile")) as f:
        text = f.read().replace("\\\n", " ")
    env = {}
    out = {"env": env}
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "ENV":
            env.update(kv.split("=", 1) for kv in rest.split())
        elif word in ("VOLUME", "EXPOSE"):
            out[word] = rest.strip()
        elif word == "ENTRYPOINT":
            out[word] = json.loads(rest)
        m = re.search(r"useradd .*--uid (\d+)", line)
        if m:
            out["uid"] = int(m.group(1))
    return out


class Deploy(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.flags, cls.twins = serve_help()
        cls.sts, cls.docs = statefulset()
        cls.pod = cls.sts["spec"]["template"]["spec"]
        (cls.ctr,) = cls.pod["containers"]
        cls.args = flag_values(cls.ctr.get("args", []))
        cls.env = {e["name"]: e for e in cls.ctr.get("env", [])}
        cls.image = dockerfile()

    def setting(self, flag):
        """The value the manifest gives --<flag>: its argument, its variable, else the default."""
        if flag in self.args:
            return self.args[flag]
        var = self.env.get("RINGCAS_" + flag.upper().replace("-", "_"))
        if var and "value" in var:
            return var["value"]
        return self.flags[flag]

    def test_flags_and_variables_are_the_servers(self):
        for flag in self.args:
            self.assertIn(flag, self.flags, "deploy/k8s: --%s is not a serve flag" % flag)
        for name in list(self.env) + list(self.image["env"]):
            self.assertIn(name, self.twins, "deploy: %s is not a variable of ringcas serve" % name)
        self.assertEqual(self.image["ENTRYPOINT"][1:], ["serve"])

    def test_image_and_statefulset_agree(self):
        listen = self.env["RINGCAS_LISTEN"]["value"]
        data = self.env["RINGCAS_DIR"]["value"]
        self.assertEqual(self.image["env"]["RINGCAS_LISTEN"], listen)
        self.assertEqual(self.image["env"]["RINGCAS_DIR"], data)
        self.assertEqual(self.image["VOLUME"], data)
        (mount,) = [m for m in self.ctr["volumeMounts"] if m["name"] == "data"]
        self.assertEqual(mount["mountPath"], data)
        port = int(listen.rsplit(":", 1)[1])
        self.assertEqual(int(self.image["EXPOSE"]), port)
        ports = {p["name"]: p["containerPort"] for p in self.ctr["ports"]}
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            self.assertEqual(ports[self.ctr[probe]["httpGet"]["port"]], port, probe)
        annotations = self.sts["spec"]["template"]["metadata"]["annotations"]
        self.assertEqual(int(annotations["prometheus.io/port"]), port)
        self.assertEqual(self.pod["securityContext"]["runAsUser"], self.image["uid"])
        drain = seconds(self.setting("drain-timeout"))
        self.assertGreater(self.pod["terminationGracePeriodSeconds"], drain)

    def test_a_server_with_the_manifests_settings_serves_the_probes(self):
        env = {k: e["value"] for k, e in self.env.items()
               if "value" in e and k not in ("RINGCAS_LISTEN", "RINGCAS_DIR")}
        args = [a for k, v in self.args.items() for a in ("--" + k, v)]
        annotations = self.sts["spec"]["template"]["metadata"]["annotations"]
        paths = [self.ctr[p]["httpGet"]["path"]
                 for p in ("readinessProbe", "livenessProbe", "startupProbe")]
        with harness.Server(args=args, env=env) as srv:
            for path in paths + [annotations["prometheus.io/path"]]:
                conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
                try:
                    conn.request("GET", path)
                    self.assertEqual(conn.getresponse().status, 200, path)
                finally:
                    conn.close()

    def test_memory_limit_covers_the_per_core_bounds(self):
        # docs/operations.md, Memory: what each core may hold at worst, connections included.
        per_core = (int(self.setting("recv-buffers")) * size(self.setting("recv-buffer-size")) +
                    size(self.setting("read-memory")) +
                    int(self.setting("max-uploads")) * size(self.setting("chunk-size")) +
                    size(self.setting("zstd-memory")) + size(self.setting("message-memory")) +
                    (8 << 20) + int(self.setting("max-connections")) * (250 << 10))
        cores = self.env["RINGCAS_CORES"]
        self.assertEqual(cores["valueFrom"]["resourceFieldRef"]["resource"], "requests.cpu")
        cpus = self.ctr["resources"]["requests"]["cpu"]
        count = -(-int(cpus[:-1]) // 1000) if cpus.endswith("m") else int(cpus)
        limit = size(self.ctr["resources"]["limits"]["memory"], K8S_UNITS)
        self.assertLessEqual(count * per_core, limit,
                             "%d cores x %.2f GiB at worst > the %.2f GiB limit" %
                             (count, per_core / 2**30, limit / 2**30))

    def test_build_context_leaves_out_builds_and_data(self):
        # `make run` leaves build/release (whose CMakeCache.txt names this folder: the image's
        # `cmake --preset release` fails on it) and ./ringcas-data in the context.
        with open(os.path.join(harness.ROOT, ".dockerignore")) as f:
            patterns = {l.strip().strip("/") for l in f if l.strip() and not l.startswith("#")}
        for path in ("build", "ringcas-data"):
            self.assertIn(path, patterns)


if __name__ == "__main__":
    unittest.main(verbosity=2)
