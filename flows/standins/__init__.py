"""Local stand-ins for the real services, in one importable package.

The tests, ``make demo``, ``make up`` and the benchmarks all use these; none patches ``sys.path``:

* :mod:`flows.standins.kube_emulator`: a strict Kubernetes API emulator (real HTTP, real client);
* :mod:`flows.standins.moto`: moto's S3 server as a subprocess (two regions);
* :mod:`flows.standins.prometheus`: the Prometheus binary with a generated scrape config;
* :mod:`flows.standins.sshhosts`: Debian SSH hosts in network namespaces (root only);
* :mod:`flows.standins.traffic`: Triton/vLLM-like exporters for canary and baseline pods;
* :mod:`flows.standins.rehearsal`: the production rehearsal: deploy/k8s on the emulator, scraped and
  served per pod (tests/integration/test_rehearsal_stack.py and the canary/idle-GPU benchmarks);
* :mod:`flows.standins.faults`, :mod:`flows.standins.ports`: fault injection and free ports.

Production code paths never import this package: only the local stack, the demo, the benchmarks and
the tests do. Nothing here talks to anything but loopback and the namespaces it created.
"""
