"""`vfax serve`: the controller, the devices' configuration, the HTTP API, event sinks and the process."""
