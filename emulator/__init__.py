"""A faithful emulator of the Rfmcube REST API, for tests, the demo and benchmarks.

``python -m emulator --api-key KEY [--port 0] ...`` serves it (see ``__main__``);
``emulator.app.create_app(EmulatorConfig(...))`` builds it in process;
``testkit.emulator.EmulatorProcess`` runs it as a subprocess from sync code.

Modules: ``app`` (routes and the /v1 gate), ``validate`` (bodies, 400s),
``store`` (customers, orders, matching rules), ``processes`` (asynchronous
imports), ``limits`` (sliding window), ``jsonio`` (exact decimals), ``config``,
``state`` (one running emulator).
"""
