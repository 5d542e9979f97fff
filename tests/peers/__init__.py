"""Real SIP peers for tests: Kamailio (registrar + record-routing proxy) and pjsua2 in a subprocess."""
