"""The fleet simulator: many simulated gateways enrolling through one provisioning server.

``edge-provision simulate`` (``edge_provision.cli.simulate``) is its only user. The
simulated gateways run the agent's own enrollment protocol with the agent's platform
clients, retry like the daemon (``edge_provision.agent.backoff``) and are audited through
the operator listings afterwards. Import the modules you need; this package imports
nothing itself:

=================  ==========================================================
``gateways``       identities derived like real MACs (run prefix + index), own keys
``arrival``        when each gateway powers on (all at once, or a linear ramp)
``retry``          the daemon's backoff for transient failures, time scaled down
``clients``        one set of platform clients per worker thread (keep-alive)
``journey``        one gateway's enrollment: lookup, mapping, bootstrap, CSR, MQTT
``runner``         the worker pool and the schedule of attempts
``stats``          percentiles, timeline and the summary document (``--json``)
``listings``       the operator listings, paginated (``/things``, ``/channels``...)
``audit``          one thing-set per gateway, nothing shared, every config fetchable
``report``         the self-contained HTML page (inline SVG and CSS, no scripts)
=================  ==========================================================
"""

from __future__ import annotations

__all__: list[str] = []
